// A stateful stand-in for the parts of GitHub's REST API previewd uses, for tests and the demo.
//
// Every API request is checked against GitHub's official OpenAPI description
// (@octokit/openapi, pinned in e2e/package.json): the method and path must exist, required
// parameters must be present, query parameters must be ones the operation documents with the
// documented type, and a JSON body must be valid against the operation's request schema. A
// request that does not fit is answered 422, like GitHub's "Validation Failed", and recorded as
// a violation that tests fail on (GET /_standin/violations).
//
// Answers start from the description's own example response for the operation, overlaid with
// the stand-in's state, so their shape is GitHub's.
//
// Usage: node e2e/github-standin/server.mjs [--port N]   (prints its URL as the first line)

import http from "node:http";
import crypto from "node:crypto";
import { createRequire } from "node:module";
import Ajv from "ajv";
import addFormats from "ajv-formats";

const require = createRequire(import.meta.url);
const spec = require("@octokit/openapi/generated/api.github.com.deref.json");

// ---------------------------------------------------------------------------------------------
// The OpenAPI description: operations by method and path template, schemas compiled on demand.

const operations = [];
for (const [template, item] of Object.entries(spec.paths)) {
  const names = [];
  const pattern = template.replace(/\{([^}]+)\}/g, (_, name) => {
    names.push(name);
    return "([^/]+)";
  });
  for (const method of ["get", "post", "patch", "put", "delete"]) {
    if (item[method]) {
      operations.push({ method: method.toUpperCase(), template, regex: new RegExp(`^${pattern}$`), names, op: item[method] });
    }
  }
}
// Literal paths win over templated ones (`/app/installations` vs `/app/{x}`).
operations.sort((a, b) => a.names.length - b.names.length);

const ajv = new Ajv({ strict: false, allErrors: true, validateFormats: true });
addFormats(ajv);
const compiled = new Map();

// OpenAPI 3.0's `nullable` is not JSON Schema: `{type: t, nullable: true}` becomes `{type: [t, "null"]}`.
function toJsonSchema(schema) {
  if (Array.isArray(schema)) return schema.map(toJsonSchema);
  if (!schema || typeof schema !== "object") return schema;
  const out = {};
  for (const [key, value] of Object.entries(schema)) {
    if (key === "example" || key === "examples" || key === "nullable") continue;
    out[key] = toJsonSchema(value);
  }
  if (schema.nullable) {
    if (typeof out.type === "string") out.type = [out.type, "null"];
    else if (out.enum) out.enum = [...out.enum, null];
    else if (!out.type) out.anyOf = [...(out.anyOf ?? []), { type: "null" }];
    if (out.enum && !out.enum.includes(null)) out.enum = [...out.enum, null];
  }
  return out;
}

function validator(key, schema) {
  if (!compiled.has(key)) compiled.set(key, ajv.compile(toJsonSchema(schema)));
  return compiled.get(key);
}

function findOperation(method, path) {
  let pathExists = false;
  for (const entry of operations) {
    const match = entry.regex.exec(path);
    if (!match) continue;
    pathExists = true;
    if (entry.method !== method) continue;
    const params = {};
    entry.names.forEach((name, i) => (params[name] = decodeURIComponent(match[i + 1])));
    return { entry, params };
  }
  return { pathExists };
}

// Problems of a request under its operation; empty when it fits.
function checkRequest(entry, query, rawBody) {
  const problems = [];
  const documented = new Map((entry.op.parameters ?? []).filter((p) => p.in === "query").map((p) => [p.name, p]));
  for (const [name, parameter] of documented) {
    if (parameter.required && !query.has(name)) problems.push(`query parameter \`${name}\` is required`);
  }
  for (const [name, value] of query) {
    const parameter = documented.get(name);
    if (!parameter) {
      problems.push(`query parameter \`${name}\` is not documented for ${entry.method} ${entry.template}`);
      continue;
    }
    const schema = parameter.schema ?? {};
    if (schema.type === "integer" && !/^-?\d+$/.test(value)) problems.push(`query parameter \`${name}\` must be an integer`);
    if (schema.type === "boolean" && !["true", "false"].includes(value)) problems.push(`query parameter \`${name}\` must be a boolean`);
    if (schema.enum && !schema.enum.includes(value)) problems.push(`query parameter \`${name}\` must be one of ${schema.enum.join(", ")}`);
  }
  const requestBody = entry.op.requestBody;
  const hasBody = rawBody.length > 0;
  if (!requestBody) {
    if (hasBody) problems.push(`${entry.method} ${entry.template} takes no request body`);
    return { problems, body: undefined };
  }
  if (!hasBody) {
    if (requestBody.required) problems.push("a JSON request body is required");
    return { problems, body: undefined };
  }
  let body;
  try {
    body = JSON.parse(rawBody);
  } catch (error) {
    problems.push(`request body is not JSON: ${error.message}`);
    return { problems, body: undefined };
  }
  const schema = requestBody.content?.["application/json"]?.schema;
  if (schema) {
    const validate = validator(`${entry.method} ${entry.template}`, schema);
    if (!validate(body)) {
      for (const error of validate.errors) problems.push(`body${error.instancePath || ""} ${error.message} ${JSON.stringify(error.params)}`);
    }
  }
  return { problems, body };
}

// The description's example answer for an operation and status, or an empty object.
function example(entry, status) {
  const content = entry.op.responses?.[String(status)]?.content?.["application/json"];
  const value = content?.examples ? Object.values(content.examples)[0]?.value : content?.example;
  return value === undefined ? {} : structuredClone(value);
}

// ---------------------------------------------------------------------------------------------
// State

const keys = crypto.generateKeyPairSync("rsa", { modulusLength: 2048 });
const app = {
  id: 424242,
  slug: "previewd-test",
  privateKeyPem: keys.privateKey.export({ type: "pkcs1", format: "pem" }),
};

let config, state, nextId, requests, violations, faults;
function reset() {
  config = { webhook_url: null, webhook_secret: null, pats: [], token_ttl_seconds: 3600, rate_limit: 5000 };
  state = {
    repos: [], // {id, owner, name, installation_id, private}
    files: {}, // "owner/repo@ref" -> {path: text}
    permissions: {}, // "owner/repo" -> {login: permission}
    pulls: [], // {owner, repo, number, state, merged, draft, labels, user, head_sha, head_ref, fork}
    comments: [], // {id, owner, repo, issue_number, body, user, created_at, updated_at, edits}
    reactions: [], // {comment_id, content, user}
    deployments: [], // {id, owner, repo, ref, sha, environment, ..., statuses: []}
    check_runs: [], // {id, owner, repo, name, head_sha, status, conclusion, output, details_url, app}
    statuses: [], // {owner, repo, sha, context, state}
    deliveries: [], // {id, guid, event, action, installation_id, repository_id, payload, status_code, status, redelivery, delivered_at, duration}
    tokens: {}, // token -> {installation_id, expires_at}
    tokens_issued: {}, // installation id -> count
  };
  nextId = 1000;
  requests = [];
  violations = [];
  faults = [];
}
reset();
const etags = new Map(); // "owner/repo" pulls listing -> version counter
let budget = new Map(); // token -> used

const id = () => ++nextId;
const now = () => new Date().toISOString().replace(/\.\d{3}Z$/, "Z");
const repoOf = (owner, name) => state.repos.find((r) => r.owner.toLowerCase() === owner.toLowerCase() && r.name.toLowerCase() === name.toLowerCase());
const fullName = (r) => `${r.owner}/${r.name}`;
const bumpPulls = (owner, repo) => etags.set(`${owner}/${repo}`.toLowerCase(), (etags.get(`${owner}/${repo}`.toLowerCase()) ?? 0) + 1);

// ---------------------------------------------------------------------------------------------
// Authentication

function verifyJwt(token) {
  const parts = token.split(".");
  if (parts.length !== 3) return "not a JWT";
  const [header, payload, signature] = parts;
  const verifier = crypto.createVerify("RSA-SHA256");
  verifier.update(`${header}.${payload}`);
  if (!verifier.verify(keys.publicKey, Buffer.from(signature, "base64url"))) return "bad JWT signature";
  let claims;
  try {
    claims = JSON.parse(Buffer.from(payload, "base64url").toString());
  } catch {
    return "unreadable JWT claims";
  }
  const t = Math.floor(Date.now() / 1000);
  if (String(claims.iss) !== String(app.id)) return `JWT issuer ${claims.iss} is not the App`;
  if (!(claims.exp > t)) return "JWT expired";
  if (claims.iat > t + 60) return "JWT issued in the future";
  if (claims.exp - claims.iat > 600 + 60) return "JWT lives longer than 10 minutes";
  return null;
}

// {kind: "jwt"|"installation"|"pat"|"none", installation_id?, login?, error?}
function authenticate(req) {
  const header = req.headers.authorization ?? "";
  const match = /^(Bearer|token)\s+(.+)$/i.exec(header);
  if (!match) return { kind: "none" };
  const token = match[2].trim();
  if (token.split(".").length === 3) {
    const error = verifyJwt(token);
    return error ? { kind: "none", error } : { kind: "jwt" };
  }
  const issued = state.tokens[token];
  if (issued) {
    if (Date.parse(issued.expires_at) <= Date.now()) return { kind: "none", error: "installation token expired" };
    return { kind: "installation", installation_id: issued.installation_id, token };
  }
  const pat = config.pats.find((p) => p.token === token);
  if (pat) return { kind: "pat", login: pat.login, token };
  return { kind: "none", error: "unknown token" };
}

function actorLogin(auth) {
  return auth.kind === "pat" ? auth.login : `${app.slug}[bot]`;
}

// ---------------------------------------------------------------------------------------------
// Shapes

function user(login, type = login.endsWith("[bot]") ? "Bot" : "User") {
  return { login, id: Math.abs(hash(login)) % 1000000, node_id: "U_" + login, type, site_admin: false, html_url: `https://github.com/${login}` };
}
function hash(text) {
  let h = 0;
  for (const c of text) h = (h * 31 + c.charCodeAt(0)) | 0;
  return h;
}
function repoJson(base, r) {
  return Object.assign(base ?? {}, {
    id: r.id, name: r.name, full_name: fullName(r), private: !!r.private, fork: false,
    owner: Object.assign(base?.owner ?? {}, user(r.owner, "Organization")),
    html_url: `https://github.com/${fullName(r)}`,
  });
}
function pullJson(base, p) {
  const r = repoOf(p.owner, p.repo);
  const headRepo = p.fork
    ? { id: r.id + 900000, name: r.name, full_name: `${p.user}/${r.name}`, fork: true, owner: user(p.user) }
    : repoJson({}, r);
  return Object.assign(base, {
    number: p.number, state: p.state, draft: !!p.draft, merged: !!p.merged, merged_at: p.merged ? p.merged_at : null,
    title: p.title ?? `Pull request ${p.number}`, user: user(p.user),
    labels: p.labels.map((name) => ({ id: Math.abs(hash(name)), name, color: "ededed", default: false })),
    head: Object.assign(base.head ?? {}, { sha: p.head_sha, ref: p.head_ref, label: `${headRepo.owner.login}:${p.head_ref}`, repo: headRepo, user: user(headRepo.owner.login) }),
    base: Object.assign(base.base ?? {}, { ref: "main", sha: "0".repeat(40), repo: repoJson({}, r), user: user(r.owner, "Organization") }),
    html_url: `https://github.com/${fullName(r)}/pull/${p.number}`,
  });
}
function commentJson(base, c) {
  return Object.assign(base, {
    id: c.id, node_id: `IC_${c.id}`, body: c.body, user: user(c.user), created_at: c.created_at, updated_at: c.updated_at,
    html_url: `https://github.com/${c.owner}/${c.repo}/pull/${c.issue_number}#issuecomment-${c.id}`,
  });
}
function deploymentJson(base, d) {
  return Object.assign(base, {
    id: d.id, node_id: `DE_${d.id}`, sha: d.sha, ref: d.ref, task: d.task ?? "deploy", environment: d.environment,
    original_environment: d.environment, description: d.description ?? null, payload: d.payload ?? {},
    transient_environment: !!d.transient_environment, production_environment: !!d.production_environment,
    creator: user(d.creator), created_at: d.created_at, updated_at: d.created_at,
  });
}
function checkRunJson(base, c) {
  return Object.assign(base, {
    id: c.id, node_id: `CR_${c.id}`, name: c.name, head_sha: c.head_sha, status: c.status, conclusion: c.conclusion ?? null,
    details_url: c.details_url ?? null, output: Object.assign(base.output ?? {}, { title: c.output?.title ?? null, summary: c.output?.summary ?? null }),
    started_at: c.started_at, completed_at: c.completed_at ?? null,
  });
}
function deliveryJson(d, full = false) {
  const out = {
    id: d.id, guid: d.guid, delivered_at: d.delivered_at, redelivery: d.redelivery, duration: d.duration,
    status: d.status, status_code: d.status_code, event: d.event, action: d.action ?? null,
    installation_id: d.installation_id ?? null, repository_id: d.repository_id ?? null, throttled_at: null,
  };
  if (full) {
    out.url = config.webhook_url;
    out.request = { headers: d.headers ?? {}, payload: d.payload };
    out.response = { headers: {}, payload: null };
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Deliveries (the webhook side)

async function deliver({ event, payload, installation_id, guid, redelivery = false }) {
  const body = JSON.stringify(payload);
  const headers = {
    "content-type": "application/json",
    "user-agent": "GitHub-Hookshot/standin",
    "x-github-event": event,
    "x-github-delivery": guid ?? crypto.randomUUID(),
    "x-github-hook-id": "4242",
    "x-github-hook-installation-target-type": "integration",
    "x-github-hook-installation-target-id": String(app.id),
    "x-hub-signature-256": "sha256=" + crypto.createHmac("sha256", config.webhook_secret ?? "").update(body).digest("hex"),
  };
  const record = {
    id: id(), guid: headers["x-github-delivery"], event, action: payload.action, installation_id: installation_id ?? payload.installation?.id ?? null,
    repository_id: payload.repository?.id ?? null, payload, headers: { ...headers, "x-hub-signature-256": "sha256=***" }, redelivery,
    delivered_at: now(), duration: 0, status_code: 0, status: "",
  };
  const started = Date.now();
  try {
    const response = await fetch(config.webhook_url, { method: "POST", headers, body, signal: AbortSignal.timeout(10000) });
    await response.arrayBuffer();
    record.status_code = response.status;
    record.status = response.ok ? "OK" : `Invalid HTTP Response: ${response.status}`;
  } catch (error) {
    record.status_code = 0;
    record.status = `failed to connect: ${error.cause?.code ?? error.message}`;
  }
  record.duration = (Date.now() - started) / 1000;
  state.deliveries.unshift(record);
  return record;
}

// ---------------------------------------------------------------------------------------------
// API handlers: (req context) -> [status, body, headers?]

function paginate(items, query, path) {
  const perPage = Math.min(Number(query.get("per_page") ?? 30), 100);
  const page = Number(query.get("page") ?? 1);
  const slice = items.slice((page - 1) * perPage, page * perPage);
  const headers = {};
  const last = Math.max(1, Math.ceil(items.length / perPage));
  if (page < last) {
    const next = new URLSearchParams(query);
    next.set("page", String(page + 1));
    headers.link = `<${baseUrl}${path}?${next}>; rel="next", <${baseUrl}${path}?${new URLSearchParams({ ...Object.fromEntries(query), page: String(last) })}>; rel="last"`;
  }
  return [slice, headers];
}

function repoAccess(auth, params) {
  const r = repoOf(params.owner, params.repo);
  if (!r) return [null, [404, { message: "Not Found" }]];
  if (auth.kind === "pat") return [r, null];
  if (auth.kind === "installation" && r.installation_id === auth.installation_id) return [r, null];
  if (auth.kind === "installation") return [null, [404, { message: "Not Found" }]];
  return [null, [401, { message: "Bad credentials" }]];
}

const handlers = {
  "POST /app/installations/{installation_id}/access_tokens": (c) => {
    if (c.auth.kind !== "jwt") return [401, { message: "A JSON web token could not be decoded" }];
    const installation = Number(c.params.installation_id);
    if (!state.repos.some((r) => r.installation_id === installation)) return [404, { message: "Not Found" }];
    const token = "ghs_" + crypto.randomBytes(18).toString("hex");
    const expires_at = new Date(Date.now() + config.token_ttl_seconds * 1000).toISOString().replace(/\.\d{3}Z$/, "Z");
    state.tokens[token] = { installation_id: installation, expires_at };
    state.tokens_issued[installation] = (state.tokens_issued[installation] ?? 0) + 1;
    return [201, Object.assign(example(c.entry, 201), { token, expires_at, repository_selection: "selected" })];
  },
  "GET /app/installations": (c) => {
    if (c.auth.kind !== "jwt") return [401, { message: "A JSON web token could not be decoded" }];
    const ids = [...new Set(state.repos.map((r) => r.installation_id).filter((i) => i != null))];
    const base = example(c.entry, 200)[0] ?? {};
    const [page, headers] = paginate(ids.map((i) => Object.assign(structuredClone(base), { id: i, app_id: app.id, app_slug: app.slug })), c.query, c.path);
    return [200, page, headers];
  },
  "GET /repos/{owner}/{repo}/installation": (c) => {
    if (c.auth.kind !== "jwt") return [401, { message: "A JSON web token could not be decoded" }];
    const r = repoOf(c.params.owner, c.params.repo);
    if (!r || r.installation_id == null) return [404, { message: "Not Found" }];
    return [200, Object.assign(example(c.entry, 200), { id: r.installation_id, app_id: app.id, app_slug: app.slug })];
  },
  "GET /installation/repositories": (c) => {
    if (c.auth.kind !== "installation") return [401, { message: "Bad credentials" }];
    const repos = state.repos.filter((r) => r.installation_id === c.auth.installation_id);
    const [page, headers] = paginate(repos.map((r) => repoJson({}, r)), c.query, c.path);
    return [200, { total_count: repos.length, repository_selection: "selected", repositories: page }, headers];
  },
  "GET /app/hook/deliveries": (c) => {
    if (c.auth.kind !== "jwt") return [401, { message: "A JSON web token could not be decoded" }];
    const perPage = Math.min(Number(c.query.get("per_page") ?? 30), 100);
    const cursor = c.query.get("cursor");
    const start = cursor ? state.deliveries.findIndex((d) => String(d.id) === cursor) : 0;
    const slice = state.deliveries.slice(Math.max(start, 0), Math.max(start, 0) + perPage);
    const headers = {};
    const following = state.deliveries[Math.max(start, 0) + perPage];
    if (following) headers.link = `<${baseUrl}${c.path}?per_page=${perPage}&cursor=${following.id}>; rel="next"`;
    return [200, slice.map((d) => deliveryJson(d)), headers];
  },
  "GET /app/hook/deliveries/{delivery_id}": (c) => {
    if (c.auth.kind !== "jwt") return [401, { message: "A JSON web token could not be decoded" }];
    const d = state.deliveries.find((x) => String(x.id) === c.params.delivery_id);
    return d ? [200, deliveryJson(d, true)] : [404, { message: "Not Found" }];
  },
  "POST /app/hook/deliveries/{delivery_id}/attempts": async (c) => {
    if (c.auth.kind !== "jwt") return [401, { message: "A JSON web token could not be decoded" }];
    const d = state.deliveries.find((x) => String(x.id) === c.params.delivery_id);
    if (!d) return [404, { message: "Not Found" }];
    // GitHub answers at once and delivers afterwards.
    setTimeout(() => deliver({ event: d.event, payload: d.payload, installation_id: d.installation_id, guid: d.guid, redelivery: true }), 10);
    return [202, {}];
  },
  "GET /repos/{owner}/{repo}/contents/{path}": (c) => {
    const [r, denied] = repoAccess(c.auth, c.params);
    if (denied) return denied;
    const ref = c.query.get("ref") ?? "main";
    const text = state.files[`${fullName(r)}@${ref}`.toLowerCase()]?.[c.params.path];
    if (text == null) return [404, { message: "Not Found", documentation_url: "https://docs.github.com/rest/repos/contents#get-repository-content" }];
    const content = Buffer.from(text).toString("base64").replace(/(.{60})/g, "$1\n");
    const name = c.params.path.split("/").pop();
    return [200, {
      type: "file", encoding: "base64", size: Buffer.byteLength(text), name, path: c.params.path, content,
      sha: crypto.createHash("sha1").update(text).digest("hex"), url: `${baseUrl}${c.path}`, git_url: null, html_url: null, download_url: null,
      _links: { self: `${baseUrl}${c.path}`, git: null, html: null },
    }];
  },
  "GET /repos/{owner}/{repo}/collaborators/{username}/permission": (c) => {
    const [r, denied] = repoAccess(c.auth, c.params);
    if (denied) return denied;
    // GitHub answers `none` for an existing user who is no collaborator (`read` on a public
    // repository); the stand-in answers `none` for anyone not given a permission.
    const permission = state.permissions[fullName(r).toLowerCase()]?.[c.params.username.toLowerCase()] ?? "none";
    const role = { admin: "admin", maintain: "maintain", write: "write", triage: "triage", read: "read", none: "none" }[permission];
    const legacy = { maintain: "write", triage: "read" }[permission] ?? permission;
    return [200, Object.assign(example(c.entry, 200), { permission: legacy, role_name: role, user: Object.assign(example(c.entry, 200).user ?? {}, user(c.params.username)) })];
  },
  "GET /repos/{owner}/{repo}/pulls": (c) => {
    const [r, denied] = repoAccess(c.auth, c.params);
    if (denied) return denied;
    const wanted = c.query.get("state") ?? "open";
    const key = fullName(r).toLowerCase();
    const etag = `W/"pulls-${key}-${etags.get(key) ?? 0}-${c.query.get("page") ?? 1}"`;
    if (c.req.headers["if-none-match"] === etag) return [304, null, { etag }];
    const base = example(c.entry, 200)[0] ?? {};
    const pulls = state.pulls.filter((p) => p.owner.toLowerCase() === r.owner.toLowerCase() && p.repo.toLowerCase() === r.name.toLowerCase() && (wanted === "all" || p.state === wanted));
    const [page, headers] = paginate(pulls.map((p) => pullJson(structuredClone(base), p)), c.query, c.path);
    return [200, page, { ...headers, etag }];
  },
  "GET /repos/{owner}/{repo}/pulls/{pull_number}": (c) => {
    const [r, denied] = repoAccess(c.auth, c.params);
    if (denied) return denied;
    const p = state.pulls.find((x) => x.owner.toLowerCase() === r.owner.toLowerCase() && x.repo.toLowerCase() === r.name.toLowerCase() && x.number === Number(c.params.pull_number));
    return p ? [200, pullJson(example(c.entry, 200), p)] : [404, { message: "Not Found" }];
  },
  "GET /repos/{owner}/{repo}/issues/{issue_number}/comments": (c) => {
    const [r, denied] = repoAccess(c.auth, c.params);
    if (denied) return denied;
    const base = example(c.entry, 200)[0] ?? {};
    const list = state.comments.filter((x) => x.repo_id === r.id && x.issue_number === Number(c.params.issue_number));
    const [page, headers] = paginate(list.map((x) => commentJson(structuredClone(base), x)), c.query, c.path);
    return [200, page, headers];
  },
  "POST /repos/{owner}/{repo}/issues/{issue_number}/comments": (c) => {
    const [r, denied] = repoAccess(c.auth, c.params);
    if (denied) return denied;
    const comment = { id: id(), repo_id: r.id, owner: r.owner, repo: r.name, issue_number: Number(c.params.issue_number), body: c.body.body, user: actorLogin(c.auth), created_at: now(), updated_at: now(), edits: 0 };
    state.comments.push(comment);
    return [201, commentJson(example(c.entry, 201), comment), { location: `${baseUrl}/repos/${fullName(r)}/issues/comments/${comment.id}` }];
  },
  "GET /repos/{owner}/{repo}/issues/comments/{comment_id}": (c) => {
    const [r, denied] = repoAccess(c.auth, c.params);
    if (denied) return denied;
    const comment = state.comments.find((x) => x.repo_id === r.id && x.id === Number(c.params.comment_id));
    return comment ? [200, commentJson(example(c.entry, 200), comment)] : [404, { message: "Not Found" }];
  },
  "PATCH /repos/{owner}/{repo}/issues/comments/{comment_id}": (c) => {
    const [r, denied] = repoAccess(c.auth, c.params);
    if (denied) return denied;
    const comment = state.comments.find((x) => x.repo_id === r.id && x.id === Number(c.params.comment_id));
    if (!comment) return [404, { message: "Not Found" }];
    if (comment.user !== actorLogin(c.auth)) return [403, { message: "Resource not accessible by integration" }];
    comment.body = c.body.body;
    comment.updated_at = now();
    comment.edits += 1;
    return [200, commentJson(example(c.entry, 200), comment)];
  },
  "POST /repos/{owner}/{repo}/issues/comments/{comment_id}/reactions": (c) => {
    const [r, denied] = repoAccess(c.auth, c.params);
    if (denied) return denied;
    const comment = state.comments.find((x) => x.repo_id === r.id && x.id === Number(c.params.comment_id));
    if (!comment) return [404, { message: "Not Found" }];
    const login = actorLogin(c.auth);
    let reaction = state.reactions.find((x) => x.comment_id === comment.id && x.content === c.body.content && x.user === login);
    const status = reaction ? 200 : 201;
    if (!reaction) {
      reaction = { id: id(), comment_id: comment.id, content: c.body.content, user: login, created_at: now() };
      state.reactions.push(reaction);
    }
    return [status, Object.assign(example(c.entry, status), { id: reaction.id, content: reaction.content, user: user(login), created_at: reaction.created_at })];
  },
  "GET /repos/{owner}/{repo}/deployments": (c) => {
    const [r, denied] = repoAccess(c.auth, c.params);
    if (denied) return denied;
    const base = example(c.entry, 200)[0] ?? {};
    const list = state.deployments
      .filter((d) => d.repo_id === r.id)
      .filter((d) => !c.query.get("sha") || d.sha === c.query.get("sha"))
      .filter((d) => !c.query.get("ref") || d.ref === c.query.get("ref"))
      .filter((d) => !c.query.get("environment") || d.environment === c.query.get("environment"))
      .reverse();
    const [page, headers] = paginate(list.map((d) => deploymentJson(structuredClone(base), d)), c.query, c.path);
    return [200, page, headers];
  },
  "POST /repos/{owner}/{repo}/deployments": (c) => {
    const [r, denied] = repoAccess(c.auth, c.params);
    if (denied) return denied;
    if (!/^[0-9a-f]{40}$/.test(c.body.ref)) return [422, { message: `No ref found for: ${c.body.ref}` }];
    const d = { id: id(), repo_id: r.id, ...c.body, sha: c.body.ref, environment: c.body.environment ?? "production", creator: actorLogin(c.auth), created_at: now(), statuses: [] };
    state.deployments.push(d);
    return [201, deploymentJson(example(c.entry, 201), d)];
  },
  "GET /repos/{owner}/{repo}/deployments/{deployment_id}/statuses": (c) => {
    const [r, denied] = repoAccess(c.auth, c.params);
    if (denied) return denied;
    const d = state.deployments.find((x) => x.repo_id === r.id && x.id === Number(c.params.deployment_id));
    if (!d) return [404, { message: "Not Found" }];
    const base = example(c.entry, 200)[0] ?? {};
    const [page, headers] = paginate([...d.statuses].reverse().map((s) => Object.assign(structuredClone(base), s, { creator: user(s.creator) })), c.query, c.path);
    return [200, page, headers];
  },
  "POST /repos/{owner}/{repo}/deployments/{deployment_id}/statuses": (c) => {
    const [r, denied] = repoAccess(c.auth, c.params);
    if (denied) return denied;
    const d = state.deployments.find((x) => x.repo_id === r.id && x.id === Number(c.params.deployment_id));
    if (!d) return [404, { message: "Not Found" }];
    const s = { id: id(), state: c.body.state, description: c.body.description ?? "", environment: d.environment, environment_url: c.body.environment_url ?? "", log_url: c.body.log_url ?? "", creator: actorLogin(c.auth), created_at: now(), updated_at: now() };
    d.statuses.push(s);
    // auto_inactive (default true): a success makes earlier deployments of the environment inactive.
    if (s.state === "success" && c.body.auto_inactive !== false) {
      for (const other of state.deployments) {
        if (other !== d && other.repo_id === r.id && other.environment === d.environment && other.statuses.at(-1)?.state === "success") {
          other.statuses.push({ ...other.statuses.at(-1), id: id(), state: "inactive", created_at: now(), auto: true });
        }
      }
    }
    return [201, Object.assign(example(c.entry, 201), s, { creator: user(s.creator) })];
  },
  "GET /repos/{owner}/{repo}/commits/{ref}/check-runs": (c) => {
    const [r, denied] = repoAccess(c.auth, c.params);
    if (denied) return denied;
    const base = example(c.entry, 200).check_runs?.[0] ?? {};
    const list = state.check_runs.filter((x) => x.repo_id === r.id && x.head_sha === c.params.ref && (!c.query.get("check_name") || x.name === c.query.get("check_name")));
    const [page, headers] = paginate(list.map((x) => checkRunJson(structuredClone(base), x)), c.query, c.path);
    return [200, { total_count: list.length, check_runs: page }, headers];
  },
  "GET /repos/{owner}/{repo}/commits/{ref}/status": (c) => {
    const [r, denied] = repoAccess(c.auth, c.params);
    if (denied) return denied;
    const list = state.statuses.filter((x) => x.repo_id === r.id && x.sha === c.params.ref);
    const combined = list.some((s) => ["failure", "error"].includes(s.state)) ? "failure" : list.every((s) => s.state === "success") && list.length ? "success" : "pending";
    return [200, Object.assign(example(c.entry, 200), { state: combined, sha: c.params.ref, total_count: list.length, statuses: list.map((s) => ({ id: s.id, context: s.context, state: s.state, description: s.description ?? null, target_url: null, created_at: s.created_at, updated_at: s.created_at })) })];
  },
  "POST /repos/{owner}/{repo}/check-runs": (c) => {
    if (c.auth.kind === "pat") return [403, { message: "You must authenticate via a GitHub App." }];
    const [r, denied] = repoAccess(c.auth, c.params);
    if (denied) return denied;
    const run = { id: id(), repo_id: r.id, name: c.body.name, head_sha: c.body.head_sha, status: c.body.status ?? "queued", conclusion: c.body.conclusion ?? null, output: c.body.output, details_url: c.body.details_url, app: app.slug, started_at: now(), history: [] };
    if (run.conclusion) run.status = "completed";
    run.history.push({ status: run.status, conclusion: run.conclusion });
    state.check_runs.push(run);
    return [201, checkRunJson(example(c.entry, 201), run)];
  },
  "PATCH /repos/{owner}/{repo}/check-runs/{check_run_id}": (c) => {
    if (c.auth.kind === "pat") return [403, { message: "You must authenticate via a GitHub App." }];
    const [r, denied] = repoAccess(c.auth, c.params);
    if (denied) return denied;
    const run = state.check_runs.find((x) => x.repo_id === r.id && x.id === Number(c.params.check_run_id));
    if (!run) return [404, { message: "Not Found" }];
    for (const key of ["name", "status", "conclusion", "output", "details_url"]) if (c.body[key] !== undefined) run[key] = c.body[key];
    if (c.body.conclusion) {
      run.status = "completed";
      run.completed_at = now();
    }
    run.history.push({ status: run.status, conclusion: run.conclusion });
    return [200, checkRunJson(example(c.entry, 200), run)];
  },
};

// ---------------------------------------------------------------------------------------------
// Control API (tests only; never validated, no auth)

async function control(method, path, body) {
  const parts = path.split("/").filter(Boolean).slice(1); // drop "_standin"
  const route = `${method} /${parts[0] ?? ""}`;
  switch (route) {
    case "GET /app":
      return [200, { app_id: app.id, slug: app.slug, private_key_pem: app.privateKeyPem }];
    case "PUT /config":
      Object.assign(config, body);
      return [200, config];
    case "POST /reset":
      reset();
      return [200, {}];
    case "POST /repos": {
      const r = { id: body.id, owner: body.owner, name: body.name, installation_id: body.installation_id ?? null, private: !!body.private };
      state.repos = state.repos.filter((x) => x.id !== r.id).concat([r]);
      return [201, r];
    }
    case "PUT /files": {
      const key = `${body.owner}/${body.repo}@${body.ref}`.toLowerCase();
      state.files[key] ??= {};
      if (body.content == null) delete state.files[key][body.path];
      else state.files[key][body.path] = body.content;
      return [200, {}];
    }
    case "PUT /permissions": {
      const key = `${body.owner}/${body.repo}`.toLowerCase();
      state.permissions[key] ??= {};
      state.permissions[key][body.login.toLowerCase()] = body.permission;
      return [200, {}];
    }
    case "POST /pulls": {
      const p = { state: "open", merged: false, draft: false, labels: [], fork: false, head_ref: "feature", user: "dev", ...body };
      state.pulls = state.pulls.filter((x) => !(x.owner === p.owner && x.repo === p.repo && x.number === p.number)).concat([p]);
      bumpPulls(p.owner, p.repo);
      return [201, pullJson({}, p)];
    }
    case "PATCH /pulls": {
      const [owner, repo, number] = parts.slice(1);
      const p = state.pulls.find((x) => x.owner === owner && x.repo === repo && x.number === Number(number));
      if (!p) return [404, { message: "no such pull request" }];
      Object.assign(p, body);
      if (body.merged) p.merged_at = now();
      bumpPulls(owner, repo);
      return [200, pullJson({}, p)];
    }
    case "POST /comments": {
      const r = repoOf(body.owner, body.repo);
      if (!r) return [404, { message: "no such repository" }];
      const comment = { id: id(), repo_id: r.id, owner: r.owner, repo: r.name, issue_number: body.issue_number, body: body.body, user: body.user, created_at: now(), updated_at: now(), edits: 0 };
      state.comments.push(comment);
      return [201, commentJson({}, comment)];
    }
    case "POST /check-runs": {
      const r = repoOf(body.owner, body.repo);
      const run = { id: id(), repo_id: r.id, name: body.name, head_sha: body.head_sha, status: body.status ?? "completed", conclusion: body.conclusion ?? null, app: "ci", started_at: now(), history: [] };
      state.check_runs.push(run);
      return [201, run];
    }
    case "POST /statuses": {
      const r = repoOf(body.owner, body.repo);
      const s = { id: id(), repo_id: r.id, sha: body.sha, context: body.context, state: body.state, created_at: now() };
      state.statuses.push(s);
      return [201, s];
    }
    case "POST /deliver": {
      if (!config.webhook_url) return [409, { message: "PUT /_standin/config with webhook_url first" }];
      const record = await deliver(body);
      return [200, { id: record.id, guid: record.guid, status_code: record.status_code, status: record.status }];
    }
    case "POST /faults":
      faults.push({ method: body.method ?? null, path_regex: body.path_regex ? new RegExp(body.path_regex) : null, status: body.status, count: body.count ?? 1, retry_after_seconds: body.retry_after_seconds ?? null, rate_limited: !!body.rate_limited });
      return [201, {}];
    case "DELETE /faults":
      faults = [];
      return [200, {}];
    case "GET /state":
      return [200, { ...state, tokens: undefined, deliveries: state.deliveries.map((d) => deliveryJson(d)) }];
    case "GET /requests":
      return [200, requests];
    case "GET /violations":
      return [200, violations];
    default:
      return [404, { message: `no control route ${route}` }];
  }
}

// ---------------------------------------------------------------------------------------------
// Server

let baseUrl = "";

function rateHeaders(auth) {
  const key = auth.token ?? auth.kind;
  const used = (budget.get(key) ?? 0) + 1;
  budget.set(key, used);
  const limit = config.rate_limit;
  return {
    "x-ratelimit-limit": String(limit),
    "x-ratelimit-remaining": String(Math.max(limit - used, 0)),
    "x-ratelimit-used": String(used),
    "x-ratelimit-reset": String(Math.floor(Date.now() / 1000) + 3600),
    "x-ratelimit-resource": "core",
  };
}

function send(res, status, body, headers = {}) {
  const text = body === null || status === 304 ? "" : JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json; charset=utf-8", "x-github-request-id": crypto.randomUUID(), ...headers });
  res.end(text);
}

const server = http.createServer(async (req, res) => {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  const raw = Buffer.concat(chunks).toString();
  const url = new URL(req.url, "http://standin");
  const path = url.pathname;
  try {
    if (path.startsWith("/_standin/")) {
      const [status, body] = await control(req.method, path, raw ? JSON.parse(raw) : {});
      return send(res, status, body);
    }
    const started = Date.now();
    const auth = authenticate(req);
    const log = { method: req.method, path, query: Object.fromEntries(url.searchParams), auth: auth.kind, if_none_match: !!req.headers["if-none-match"], at: started };
    requests.push(log);
    const finish = (status, body, headers = {}) => {
      log.status = status;
      log.ms = Date.now() - started;
      send(res, status, body, { ...rateHeaders(auth), ...headers });
    };
    const { entry, params, pathExists } = findOperation(req.method, path);
    if (!entry) {
      const reason = pathExists ? `method ${req.method} is not documented for this path` : "no such path in GitHub's REST API";
      violations.push({ method: req.method, path, reason });
      return finish(404, { message: "Not Found", documentation_url: "https://docs.github.com/rest" });
    }
    const { problems, body } = checkRequest(entry, url.searchParams, raw);
    if (problems.length) {
      violations.push({ method: req.method, path, operation: entry.op.operationId, reason: problems.join("; ") });
      return finish(422, { message: "Validation Failed", errors: problems.map((message) => ({ code: "invalid", message })), documentation_url: "https://docs.github.com/rest" });
    }
    const fault = faults.find((f) => f.count > 0 && (!f.method || f.method === req.method) && (!f.path_regex || f.path_regex.test(path)));
    if (fault) {
      fault.count -= 1;
      if (fault.rate_limited) {
        return finish(403, { message: "API rate limit exceeded for installation ID 1.", documentation_url: "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api" }, {
          "x-ratelimit-remaining": "0", "x-ratelimit-reset": String(Math.floor(Date.now() / 1000) + (fault.retry_after_seconds ?? 60)),
        });
      }
      const headers = fault.retry_after_seconds != null ? { "retry-after": String(fault.retry_after_seconds) } : {};
      const message = fault.status === 403 || fault.status === 429 ? "You have exceeded a secondary rate limit. Please wait a few minutes before you try again." : "Server Error";
      return finish(fault.status, { message }, headers);
    }
    if (auth.error) return finish(401, { message: "Bad credentials", documentation_url: "https://docs.github.com/rest" });
    const handler = handlers[`${req.method} ${entry.template}`];
    if (!handler) {
      violations.push({ method: req.method, path, operation: entry.op.operationId, reason: "documented by GitHub but not implemented by the stand-in" });
      return finish(501, { message: "not implemented by the GitHub stand-in" });
    }
    const [status, answer, headers] = await handler({ req, auth, params, query: url.searchParams, body, entry, path });
    return finish(status, answer, headers);
  } catch (error) {
    violations.push({ method: req.method, path, reason: `stand-in error: ${error.stack}` });
    send(res, 500, { message: String(error) });
  }
});

const portArg = process.argv.indexOf("--port");
const port = portArg > 0 ? Number(process.argv[portArg + 1]) : 0;
server.listen(port, "127.0.0.1", () => {
  baseUrl = `http://127.0.0.1:${server.address().port}`;
  process.stdout.write(`${baseUrl}\n`);
});
for (const signal of ["SIGINT", "SIGTERM"]) process.on(signal, () => server.close(() => process.exit(0)));
