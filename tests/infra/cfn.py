"""Just enough CloudFormation and IAM to ask a packaged template questions offline.

:class:`Stack` resolves intrinsic functions (``Ref``, ``Fn::Sub``, ``Fn::GetAtt``, ``Fn::If``,
``Fn::Join``, ``Fn::Split``) against parameter values and fake physical ids, so a policy reads
as the ARNs it would have in account 123456789012; :func:`failed_rules` evaluates the template's
``Rules`` for a set of parameter values.  :func:`allows` evaluates IAM statements the
way AWS does for one request: an explicit deny wins, otherwise any matching allow grants.  Only
the condition operators the templates use are implemented; any other one fails loudly, so a
new operator cannot be silently ignored by the tests.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

ACCOUNT = "123456789012"
REGION = "us-east-1"
PARTITION = "aws"
STACK_NAME = "ext-platform-test"

_NO_VALUE = object()
_SUB_VARIABLE = re.compile(r"\$\{([^}!][^}]*)\}")
_PSEUDO = {
    "AWS::AccountId": ACCOUNT,
    "AWS::Region": REGION,
    "AWS::Partition": PARTITION,
    "AWS::URLSuffix": "amazonaws.com",
    "AWS::StackName": STACK_NAME,
}


def physical_name(logical_id: str) -> str:
    """The fake physical id of a resource without an explicit name."""
    return f"{STACK_NAME}-{logical_id}"


@dataclass(frozen=True)
class Stack:
    """A parsed template plus the parameter values to resolve it with (defaults for the rest)."""

    template: Mapping[str, Any]
    parameters: Mapping[str, str] = field(default_factory=dict)

    @property
    def resources(self) -> Mapping[str, Any]:
        resources: Mapping[str, Any] = self.template["Resources"]
        return resources

    def of_type(self, type_name: str) -> dict[str, Any]:
        """Logical id → resource, for every resource of ``type_name``."""
        return {name: res for name, res in self.resources.items() if res["Type"] == type_name}

    def parameter(self, name: str) -> str:
        if name in self.parameters:
            return self.parameters[name]
        return str(self.template["Parameters"][name].get("Default", ""))

    def condition(self, name: str) -> bool:
        return bool(self._evaluate(self.template["Conditions"][name]))

    def resolve(self, node: Any) -> Any:
        """``node`` with every intrinsic function replaced by its value."""
        value = self._evaluate(node)
        if value is _NO_VALUE:
            raise ValueError("the node resolves to AWS::NoValue")
        return value

    # --- evaluation ---------------------------------------------------------------------

    def _evaluate(self, node: Any) -> Any:
        if isinstance(node, list):
            return [item for item in (self._evaluate(i) for i in node) if item is not _NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            ((key, arg),) = node.items()
            handler = _FUNCTIONS.get(key)
            if handler is not None:
                return handler(self, arg)
        return {k: v for k, v in ((k, self._evaluate(v)) for k, v in node.items()) if v is not _NO_VALUE}

    def _ref(self, name: str) -> Any:
        if name == "AWS::NoValue":
            return _NO_VALUE
        if name in _PSEUDO:
            return _PSEUDO[name]
        if name in self.template.get("Parameters", {}):
            return self.parameter(name)
        if name.endswith(".Stage"):
            return self.resources[name.removesuffix(".Stage")]["Properties"]["StageName"]
        resource = self.resources[name]
        properties = resource.get("Properties", {})
        explicit = {
            "AWS::S3::Bucket": "BucketName",
            "AWS::DynamoDB::Table": "TableName",
            "AWS::Logs::LogGroup": "LogGroupName",
            "AWS::KMS::Alias": "AliasName",
        }.get(resource["Type"])
        if explicit and explicit in properties:
            return self._evaluate(properties[explicit])
        if resource["Type"] == "AWS::SQS::Queue":
            return f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{physical_name(name)}"
        return physical_name(name)

    def _get_att(self, resource_name: str, attribute: str) -> str:
        kind = self.resources[resource_name]["Type"]
        name = self._ref(resource_name)
        arn = {
            "AWS::Serverless::Function": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}",
            "AWS::IAM::Role": f"arn:aws:iam::{ACCOUNT}:role/{name}",
            "AWS::SQS::Queue": f"arn:aws:sqs:{REGION}:{ACCOUNT}:{physical_name(resource_name)}",
            "AWS::DynamoDB::Table": f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{name}",
            "AWS::Logs::LogGroup": f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{name}:*",
            "AWS::S3::Bucket": f"arn:aws:s3:::{name}",
            "AWS::KMS::Key": f"arn:aws:kms:{REGION}:{ACCOUNT}:key/{name}",
        }
        if attribute == "Arn":
            return arn[kind]
        if attribute == "QueueName":
            return physical_name(resource_name)
        if attribute == "FunctionUrl":
            return f"https://{resource_name.lower()}.lambda-url.{REGION}.on.aws/"
        if attribute == "RegionalDomainName":
            return f"d-{resource_name.lower()}.execute-api.{REGION}.amazonaws.com"
        raise KeyError(f"{resource_name}.{attribute} is not modelled")

    def _sub(self, arg: Any) -> str:
        text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], self._evaluate(arg[1]))

        def value(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in variables:
                return str(variables[name])
            if "." in name and not name.startswith("AWS::"):
                resource, attribute = name.split(".", 1)
                return self._get_att(resource, attribute)
            return str(self._ref(name))

        return _SUB_VARIABLE.sub(value, text)


def _if(stack: Stack, arg: list[Any]) -> Any:
    name, when_true, when_false = arg
    return stack._evaluate(when_true if stack.condition(name) else when_false)


def _join(stack: Stack, arg: list[Any]) -> str:
    separator, items = arg
    return str(separator).join(str(item) for item in stack._evaluate(items))


def _split(stack: Stack, arg: list[Any]) -> list[str]:
    separator, text = arg
    return str(stack._evaluate(text)).split(separator)


def _get_att_function(stack: Stack, arg: Any) -> str:
    resource, attribute = arg.split(".", 1) if isinstance(arg, str) else arg
    return stack._get_att(resource, attribute)


_FUNCTIONS: dict[str, Any] = {
    "Ref": lambda stack, arg: stack._ref(arg),
    "Fn::GetAtt": _get_att_function,
    "Fn::Sub": lambda stack, arg: stack._sub(arg),
    "Fn::If": _if,
    "Fn::Join": _join,
    "Fn::Split": _split,
    "Fn::Equals": lambda stack, arg: str(stack._evaluate(arg[0])) == str(stack._evaluate(arg[1])),
    "Fn::Not": lambda stack, arg: not stack._evaluate(arg[0]),
    "Fn::And": lambda stack, arg: all(stack._evaluate(item) for item in arg),
    "Fn::Or": lambda stack, arg: any(stack._evaluate(item) for item in arg),
    "Condition": lambda stack, arg: stack.condition(arg),
}


def failed_rules(template: Mapping[str, Any], parameters: Mapping[str, str]) -> list[str]:
    """The ``AssertDescription`` of every ``Rules`` assertion CloudFormation would refuse ``parameters`` for."""
    stack = Stack(template, parameters)
    failed: list[str] = []
    for rule in template["Rules"].values():
        if "RuleCondition" in rule and not stack.resolve(rule["RuleCondition"]):
            continue
        failed += [check["AssertDescription"] for check in rule["Assertions"] if not stack.resolve(check["Assert"])]
    return failed


# --- IAM -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One request as IAM sees it."""

    action: str
    resource: str
    principal: str = ""
    context: Mapping[str, str] = field(default_factory=dict)


def _listify(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _matches(patterns: Any, value: str) -> bool:
    return any(fnmatch.fnmatchcase(value.lower(), str(p).lower()) for p in _listify(patterns))


def _matches_exactly(patterns: Any, value: str) -> bool:
    return any(fnmatch.fnmatchcase(value, str(p)) for p in _listify(patterns))


def _condition_holds(operator: str, key: str, expected: Any, context: Mapping[str, str]) -> bool:
    present = key in context
    actual = context.get(key, "")
    if operator == "Null":
        return (not present) == (str(expected).lower() == "true")
    if operator.endswith("IfExists") and not present:
        return True
    base = operator.removesuffix("IfExists")
    if not present:
        return base.startswith(("StringNot", "ArnNot"))
    checks = {
        "StringEquals": lambda: actual in [str(e) for e in _listify(expected)],
        "StringLike": lambda: _matches_exactly(expected, actual),
        "ArnEquals": lambda: actual in [str(e) for e in _listify(expected)],
        "ArnLike": lambda: _matches_exactly(expected, actual),
        "ArnNotEquals": lambda: actual not in [str(e) for e in _listify(expected)],
        "Bool": lambda: actual.lower() == str(expected).lower(),
    }
    if base not in checks:
        raise NotImplementedError(f"condition operator {operator} is not modelled")
    return bool(checks[base]())


def _statement_applies(statement: Mapping[str, Any], request: Request) -> bool:
    for unsupported in ("NotAction", "NotResource", "NotPrincipal"):
        if unsupported in statement:
            raise NotImplementedError(f"{unsupported} is not modelled")
    if not _matches(statement["Action"], request.action):
        return False
    if not _matches_exactly(statement["Resource"], request.resource):
        return False
    principal = statement.get("Principal")
    if principal is not None and principal != "*":
        named = _listify(principal.get("AWS", [])) + _listify(principal.get("Service", []))
        if not _matches_exactly(named, request.principal):
            return False
    for operator, keys in statement.get("Condition", {}).items():
        for key, expected in keys.items():
            if not _condition_holds(operator, key, expected, request.context):
                return False
    return True


def denies(statements: Iterable[Mapping[str, Any]], request: Request) -> bool:
    """Whether any ``Deny`` statement applies to ``request``."""
    return any(s["Effect"] == "Deny" and _statement_applies(s, request) for s in statements)


def allows(statements: Iterable[Mapping[str, Any]], request: Request) -> bool:
    """Whether ``statements`` grant ``request``: some allow applies and no deny does."""
    listed = list(statements)
    if denies(listed, request):
        return False
    return any(s["Effect"] == "Allow" and _statement_applies(s, request) for s in listed)
