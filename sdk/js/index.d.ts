// Types of the JavaScript/TypeScript SDK (index.js); TypeScript projects import "@ext-platform/sdk".
export interface User { sub: string; roles: string[] }
export interface Request {
  method: string;
  path: string;
  query: Record<string, string>;
  queryAll: [string, string][];
  headers: Record<string, string>;
  headerPairs: [string, string][];
  body: Uint8Array;
  params: Record<string, string>;
  handler: string | undefined;
  text(): string;
  json(): unknown;
}
export interface FetchResponse {
  status: number;
  headers: Record<string, string>;
  body: Uint8Array;
  text(): string;
  json(): unknown;
}
export interface Context {
  requestId: string;
  tenantId: string;
  extensionId: string;
  installId: string;
  version: string;
  contentHash: string;
  config: Record<string, unknown>;
  user: User | undefined;
  log: { debug(m: string): void; info(m: string): void; warn(m: string): void; error(m: string): void };
  http: {
    fetch(
      url: string,
      options?: { method?: string; headers?: Record<string, string>; body?: string | Uint8Array; timeoutMs?: number },
    ): FetchResponse;
  };
  kv: {
    get(key: string): { value: Uint8Array; revision: number } | undefined;
    set(key: string, value: string | Uint8Array, ifRevision?: number): number;
    delete(key: string): boolean;
    listKeys(prefix?: string, cursor?: string, limit?: number): { keys: string[]; cursor: string | undefined };
  };
  secrets: { get(name: string): string };
}
export class HostError extends Error {
  code: string;
  detail: string;
}
export class Response {
  constructor(status?: number, headers?: Record<string, string>, body?: string | Uint8Array | ArrayBuffer);
  status: number;
  headers: Record<string, string>;
  body: Uint8Array;
  static json(value: unknown, status?: number, headers?: Record<string, string>): Response;
  static text(value: string, status?: number, headers?: Record<string, string>): Response;
}
export function handler(name: string, fn: (req: Request, ctx: Context) => Response): void;
export function handle(ctx: unknown, req: unknown): unknown;
