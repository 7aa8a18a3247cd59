// GitHub's REST API description (npm @octokit/openapi, pinned in e2e/package.json), as the
// stand-in uses it: which operation a request is, whether the request fits that operation, and
// the description's example answers.
//
// The file loaded is `api.github.com.json`, the variant that keeps `$ref`s: it parses in about a
// quarter of the time of the dereferenced one (`api.github.com.deref.json`, 73 MB) and takes a
// third of the memory. Its component schemas are handed to ajv once, each under its own URI, and
// ajv follows the `$ref`s. The description is OpenAPI 3.0 (there is no 3.1 variant in the
// package), so its `nullable` keyword is rewritten into JSON Schema on the way in.

import { createRequire } from "node:module";
import Ajv from "ajv";
import addFormats from "ajv-formats";

const require = createRequire(import.meta.url);
export const spec = require("@octokit/openapi/generated/api.github.com.json");
export const specVersion = spec.info.version;

const SCHEMA_BASE = "https://standin.invalid/components/schemas/";

// A local `$ref` ("#/components/parameters/per-page") followed to what it points at.
export function deref(node) {
  let seen = 0;
  while (node && typeof node === "object" && typeof node.$ref === "string" && node.$ref.startsWith("#/")) {
    if (++seen > 20) throw new Error(`$ref loop at ${node.$ref}`);
    node = node.$ref
      .slice(2)
      .split("/")
      .map((part) => part.replace(/~1/g, "/").replace(/~0/g, "~"))
      .reduce((at, key) => at?.[key], spec);
  }
  return node;
}

// ---------------------------------------------------------------------------------------------
// OpenAPI 3.0 schema -> JSON Schema (draft-07, ajv's default)

// `nullable: true` admits null besides the schema; OpenAPI's `example` and `x-*` extensions are
// dropped; references to component schemas point at the URIs they are registered under.
export function toJsonSchema(schema) {
  if (Array.isArray(schema)) return schema.map(toJsonSchema);
  if (!schema || typeof schema !== "object") return schema;
  const out = {};
  for (const [key, value] of Object.entries(schema)) {
    if (key === "example" || key === "nullable" || key === "discriminator" || key.startsWith("x-")) continue;
    if (key === "$ref" && typeof value === "string") {
      out.$ref = value.startsWith("#/components/schemas/") ? SCHEMA_BASE + value.slice("#/components/schemas/".length) : value;
      continue;
    }
    // `properties` maps names to schemas: a property may be called `example` or `nullable`.
    if (key === "properties" || key === "patternProperties") {
      out[key] = Object.fromEntries(Object.entries(value).map(([name, sub]) => [name, toJsonSchema(sub)]));
      continue;
    }
    out[key] = key === "enum" || key === "required" || key === "default" || key === "examples" ? value : toJsonSchema(value);
  }
  if (schema.nullable === true) {
    const onlyType = typeof out.type === "string" && !out.enum && !out.anyOf && !out.oneOf && !out.allOf && !out.$ref;
    if (onlyType) out.type = [out.type, "null"];
    else if (out.type !== undefined || out.enum || out.anyOf || out.oneOf || out.allOf || out.$ref) return { anyOf: [out, { type: "null" }] };
  }
  return out;
}

const ajv = new Ajv({ strict: false, allErrors: true, validateSchema: false, logger: false });
addFormats(ajv);
// Formats of the description that are neither JSON Schema's nor ajv-formats': not checked.
for (const name of ["repo.nwo"]) ajv.addFormat(name, true);
for (const [name, schema] of Object.entries(spec.components.schemas)) ajv.addSchema(toJsonSchema(schema), SCHEMA_BASE + name);

const compiled = new Map();
function validator(key, schema) {
  let validate = compiled.get(key);
  if (!validate) {
    validate = ajv.compile(toJsonSchema(schema));
    compiled.set(key, validate);
  }
  return validate;
}

function describeErrors(where, errors) {
  return (errors ?? []).map((e) => ({
    field: `${where}${e.instancePath || ""}`,
    code: e.keyword === "required" ? "missing_field" : "invalid",
    message: `${where}${e.instancePath || ""} ${e.message}${e.params && Object.keys(e.params).length ? ` ${JSON.stringify(e.params)}` : ""}`,
  }));
}

// ---------------------------------------------------------------------------------------------
// Operations

const METHODS = ["get", "post", "put", "patch", "delete"];
const operations = [];
for (const [template, item] of Object.entries(spec.paths)) {
  for (const method of METHODS) {
    const op = item[method];
    if (!op) continue;
    const parameters = [...(item.parameters ?? []), ...(op.parameters ?? [])].map(deref);
    const multi = new Set(parameters.filter((p) => p.in === "path" && p["x-multi-segment"]).map((p) => p.name));
    const names = [];
    const segments = template.split("/");
    const pattern = segments
      .map((segment) =>
        segment.replace(/[.*+?^$()|[\]\\]/g, "\\$&").replace(/\{([^}]+)\}/g, (_, name) => {
          names.push(name);
          return multi.has(name) ? "(.+)" : "([^/]+)";
        }),
      )
      .join("/");
    operations.push({
      method: method.toUpperCase(),
      template,
      regex: new RegExp(`^${pattern}$`),
      names,
      literals: segments.filter((s) => s && !s.includes("{")).length,
      multi: multi.size,
      op,
      parameters,
    });
  }
}
// When several templates match a path, the most literal one is meant: `/pulls/comments` rather
// than `/pulls/{pull_number}`, `/commits/{ref}/status` rather than `/commits/{ref}` (whose `ref`
// may span segments).
operations.sort((a, b) => b.literals - a.literals || a.multi - b.multi || a.names.length - b.names.length);
export const operationCount = operations.length;

// The operation `method path` is, with its path parameters; or whether the path exists under
// another method.
export function findOperation(method, path) {
  let pathExists = false;
  for (const entry of operations) {
    const match = entry.regex.exec(path);
    if (!match) continue;
    pathExists = true;
    if (entry.method !== method) continue;
    const params = {};
    try {
      entry.names.forEach((name, i) => (params[name] = decodeURIComponent(match[i + 1])));
    } catch {
      continue;
    }
    return { entry, params };
  }
  return { entry: null, pathExists };
}

// A query or path parameter arrives as text; its schema speaks of integers, booleans, arrays.
function coerce(text, schema) {
  const type = Array.isArray(schema?.type) ? schema.type.find((t) => t !== "null") : schema?.type;
  if (type === "integer" || type === "number") return /^-?\d+(\.\d+)?$/.test(text) ? Number(text) : text;
  if (type === "boolean") return text === "true" ? true : text === "false" ? false : text;
  if (type === "array") return text === "" ? [] : text.split(",").map((item) => coerce(item, schema.items));
  return text;
}

// The problems of a request under its operation (`[]` when it fits), each `{field, code,
// message}` like the `errors` of GitHub's "Validation Failed", and the parsed body.
export function checkRequest(entry, params, query, rawBody, contentType) {
  const problems = [];
  const key = `${entry.method} ${entry.template}`;
  for (const parameter of entry.parameters) {
    if (parameter.in !== "path" && parameter.in !== "query") continue;
    const where = `${parameter.in} parameter \`${parameter.name}\``;
    const present = parameter.in === "path" ? params[parameter.name] !== undefined : query.has(parameter.name);
    if (!present) {
      if (parameter.required) problems.push({ field: parameter.name, code: "missing_field", message: `${where} is required` });
      continue;
    }
    const values = parameter.in === "path" ? [params[parameter.name]] : query.getAll(parameter.name);
    if (values.length > 1 && parameter.schema?.type !== "array") {
      problems.push({ field: parameter.name, code: "invalid", message: `${where} is given ${values.length} times` });
    }
    const validate = validator(`${key} ${parameter.in} ${parameter.name}`, parameter.schema ?? {});
    const value = parameter.schema?.type === "array" && values.length > 1 ? values : coerce(values[0], parameter.schema);
    if (!validate(value)) {
      problems.push(
        ...describeErrors(where, validate.errors).map((p) => ({ ...p, field: parameter.name, message: `${p.message} (got ${JSON.stringify(values[0])})` })),
      );
    }
  }
  const documented = new Set(entry.parameters.filter((p) => p.in === "query").map((p) => p.name));
  for (const name of new Set(query.keys())) {
    if (!documented.has(name)) {
      problems.push({ field: name, code: "invalid", message: `query parameter \`${name}\` is not documented for ${key}` });
    }
  }

  const requestBody = deref(entry.op.requestBody);
  const text = rawBody.trim();
  let body;
  if (text.length > 0) {
    try {
      body = JSON.parse(text);
    } catch (error) {
      problems.push({ field: "body", code: "invalid", message: `request body is not JSON: ${error.message}` });
      return { problems, body: undefined };
    }
  }
  // `{}` and `null` carry nothing; some clients send them on every POST.
  const empty = body === undefined || body === null || (typeof body === "object" && !Array.isArray(body) && Object.keys(body).length === 0);
  if (!requestBody) {
    if (!empty) problems.push({ field: "body", code: "invalid", message: `${key} takes no request body` });
    return { problems, body: undefined };
  }
  if (body === undefined) {
    if (requestBody.required) problems.push({ field: "body", code: "missing", message: "a JSON request body is required" });
    return { problems, body: undefined };
  }
  const media = Object.keys(requestBody.content ?? {});
  const json = requestBody.content?.["application/json"];
  if (!json) {
    problems.push({ field: "body", code: "invalid", message: `${key} takes ${media.join(", ")}, not JSON` });
    return { problems, body };
  }
  if (contentType && !/json/i.test(contentType)) {
    problems.push({ field: "body", code: "invalid", message: `a JSON body is sent with content-type \`${contentType}\`` });
  }
  if (json.schema) {
    const validate = validator(`${key} body`, json.schema);
    if (!validate(body)) problems.push(...describeErrors("body", validate.errors));
  }
  return { problems, body };
}

// Problems of an answer the stand-in gives, against the operation's response schema (used by
// the stand-in's own tests, to keep its answers GitHub's shape).
export function checkResponse(entry, status, body) {
  const response = deref(entry.op.responses?.[String(status)]);
  // GitHub may answer any operation 401, 403, 404, 5xx... without documenting it.
  if (!response && status >= 400) return [];
  if (!response) return [{ field: "status", code: "invalid", message: `status ${status} is not documented for ${entry.method} ${entry.template}` }];
  const schema = response.content?.["application/json"]?.schema;
  if (!schema || body === null || body === undefined) return [];
  const validate = validator(`${entry.method} ${entry.template} response ${status}`, schema);
  if (validate(body)) return [];
  // GitHub answers "" for a URL never set (a deployment status's `environment_url`, whose
  // request default is ""), where its schemas say `format: uri`: that is GitHub, not a fault.
  const errors = validate.errors.filter((e) => !(e.keyword === "format" && pointerGet(body, e.instancePath) === ""));
  return describeErrors("response", errors);
}

function pointerGet(value, pointer) {
  return pointer
    .split("/")
    .slice(1)
    .map((part) => part.replace(/~1/g, "/").replace(/~0/g, "~"))
    .reduce((at, key) => (at == null ? undefined : at[key]), value);
}

// The description's example answer of an operation with that status (a deep copy), or `{}`.
export function example(entry, status) {
  const response = deref(entry.op.responses?.[String(status)]);
  const content = response?.content?.["application/json"];
  let value = content?.example;
  if (value === undefined && content?.examples) value = deref(Object.values(content.examples)[0])?.value;
  return value === undefined ? {} : structuredClone(value);
}

// The example of `method template`, for answers the stand-in builds outside an operation.
export function exampleOf(method, template, status) {
  const entry = operations.find((o) => o.method === method && o.template === template);
  return entry ? example(entry, status) : {};
}
