"""S3 notifications through SQS, and the worker's own finalize requests."""

from __future__ import annotations

import json

from chalicelib.uploads.events import CreatedObject, created_objects, finalize_request


def test_the_s3_test_event_and_other_events_give_nothing() -> None:
    test_event = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "b"}
    assert created_objects(json.dumps(test_event)) == []
    removed = {"Records": [{"eventName": "ObjectRemoved:Delete", "s3": {"object": {"key": "staging/a"}}}]}
    assert created_objects(json.dumps(removed)) == []
    assert created_objects("not json") == []
    assert created_objects("[1, 2]") == []


def test_keys_are_form_decoded() -> None:
    body = {"Records": [{"eventName": "ObjectCreated:Put", "s3": {"object": {"key": "staging%2Facme%2Fa+b%2Bc"}}}]}
    assert created_objects(json.dumps(body)) == [CreatedObject(key="staging/acme/a b+c", requested=False)]


def test_a_notification_wrapped_by_sns_is_read() -> None:
    inner = {"Records": [{"eventName": "ObjectCreated:CompleteMultipartUpload", "s3": {"object": {"key": "k"}}}]}
    wrapped = {"Type": "Notification", "Message": json.dumps(inner)}
    assert created_objects(json.dumps(wrapped)) == [CreatedObject(key="k", requested=False)]


def test_finalize_requests_round_trip_and_are_marked() -> None:
    key = "staging/acme/0123/bundle.tar.zst"
    assert created_objects(finalize_request("bucket", key)) == [CreatedObject(key=key, requested=True)]
