// A stateful stand-in for the parts of GitHub's REST API previewd uses, for tests and the demo.
//
// Every API request is checked against GitHub's official OpenAPI description (spec.mjs): a
// request that does not fit is answered 422 "Validation Failed", like GitHub, and recorded as a
// violation that tests fail on (GET /_standin/violations). Answers start from the description's
// example answer of the operation, overlaid with the stand-in's state, so they have GitHub's
// shape, including the fields the stand-in does not model.
//
// Tests drive it through the control API under /_standin/ (README.md beside this file).
//
// Usage: node e2e/github-standin/server.mjs [--port N] [--exit-with-stdin]
//        (prints its URL as the first line of stdout)

import http from "node:http";
import crypto from "node:crypto";
import { promisify } from "node:util";

// The App's key pair is made on the thread pool while the description loads on this thread.
const keysMade = promisify(crypto.generateKeyPair)("rsa", { modulusLength: 2048 });
const { checkRequest, checkResponse, example, exampleOf, findOperation, specVersion } = await import("./spec.mjs");
const keys = await keysMade;

const DOCS = "https://docs.github.com/rest";

// ---------------------------------------------------------------------------------------------
// The App the stand-in plays, with a key pair made at start (kept across resets).

const app = {
  id: 424242,
  slug: "previewd-test",
  name: "previewd (test)",
  privateKeyPem: keys.privateKey.export({ type: "pkcs1", format: "pem" }),
  publicKeyPem: keys.publicKey.export({ type: "spki", format: "pem" }),
  permissions: {
    checks: "write",
    contents: "read",
    deployments: "write",
    issues: "write",
    metadata: "read",
    pull_requests: "write",
    statuses: "read",
  },
  events: ["check_run", "issue_comment", "pull_request"],
};
const botLogin = `${app.slug}[bot]`;
// The App that stands for a repository's own CI, for seeded check runs (GitHub Actions' real id).
const ciApp = { id: 15368, slug: "github-actions", name: "GitHub Actions" };

// ---------------------------------------------------------------------------------------------
// State

let config, state, nextId, requests, violations, faults, budgets, userIds;
function reset() {
  config = {
    webhook_url: null,
    webhook_secret: null,
    pats: [], // [{token, login}]
    token_ttl_seconds: 3600,
    rate_limit: 5000,
    check_responses: false,
    // The App's OAuth client (the dashboard's sign-in), and who the browser is signed in to
    // GitHub as: /login/oauth/authorize sends them straight back with a code, or with
    // error=access_denied when nobody is.
    client_id: "Iv1.previewd-test",
    client_secret: "standin-client-secret",
    oauth_user: null,
  };
  state = {
    repos: [], // {id, owner, name, installation_id, private, default_branch}
    files: {}, // "owner/repo@ref" (lower case) -> {path: text}
    permissions: {}, // "owner/repo" (lower case) -> {login (lower case): permission | "not-a-user"}
    pulls: [], // {owner, repo, number, state, merged, merged_at, draft, labels, user, head_sha, head_ref, base_ref, fork, title, body, ...}
    comments: [], // {id, repo_id, owner, repo, issue_number, body, user, app, created_at, updated_at, edits, history}
    reactions: [], // {id, comment_id, content, user, created_at}
    deployments: [], // {id, repo_id, ref, sha, environment, task, ..., creator, created_at, statuses: [...]}
    check_runs: [], // {id, repo_id, name, head_sha, status, conclusion, output, details_url, app, history}
    statuses: [], // {id, repo_id, sha, context, state, description, target_url, creator, created_at}
    deliveries: [], // newest first: {id, guid, event, action, installation_id, repository_id, payload, status_code, status, redelivery, delivered_at, duration}
    tokens: {}, // token -> {installation_id, expires_at, repository_ids | null, permissions}
    tokens_issued: {}, // installation id -> count
    oauth_codes: {}, // code -> {login, redirect_uri, expires_at}
    user_tokens: {}, // ghu_ token -> {login, expires_at}
    org_members: {}, // org (lower case) -> [login (lower case)]
    team_members: {}, // "org/team" (lower case) -> [login (lower case)]
  };
  nextId = 1000;
  requests = [];
  violations = [];
  faults = [];
  budgets = new Map(); // rate-limit key -> {used, reset}
  userIds = new Map();
}
reset();

const id = () => ++nextId;
const isoSeconds = (ms) => new Date(ms).toISOString().replace(/\.\d{3}Z$/, "Z");
const now = () => isoSeconds(Date.now());
const same = (a, b) => String(a).toLowerCase() === String(b).toLowerCase();
const repoOf = (owner, name) => state.repos.find((r) => same(r.owner, owner) && same(r.name, name));
const fullName = (r) => `${r.owner}/${r.name}`;
let baseUrl = "";

// ---------------------------------------------------------------------------------------------
// Shapes: the description's examples with the stand-in's values laid over them.

// The example (a copy) with its api.github.com URLs pointing at the stand-in.
const examples = new Map();
function ex(entry, status) {
  return exOf(entry.method, entry.template, status, entry);
}
function exOf(method, template, status, entry = null) {
  const key = `${method} ${template} ${status}`;
  if (!examples.has(key)) examples.set(key, retarget(entry ? example(entry, status) : exampleOf(method, template, status)));
  return structuredClone(examples.get(key));
}
function retarget(value) {
  if (typeof value === "string") return value.startsWith("https://api.github.com") ? baseUrl + value.slice(22) : value;
  if (Array.isArray(value)) return value.map(retarget);
  if (value && typeof value === "object") {
    for (const key of Object.keys(value)) value[key] = retarget(value[key]);
  }
  return value;
}
const first = (value) => (Array.isArray(value) ? structuredClone(value[0] ?? {}) : {});

function userId(login) {
  const key = login.toLowerCase();
  if (!userIds.has(key)) userIds.set(key, 10000 + userIds.size);
  return userIds.get(key);
}

function user(login, type) {
  const kind = type ?? (login.endsWith("[bot]") ? "Bot" : "User");
  const api = `${baseUrl}/users/${encodeURIComponent(login)}`;
  const uid = userId(login);
  const html = kind === "Bot" ? `https://github.com/apps/${login.replace(/\[bot\]$/, "")}` : `https://github.com/${login}`;
  return {
    login,
    id: uid,
    node_id: Buffer.from(`04:${kind}${uid}`).toString("base64"),
    avatar_url: `https://avatars.githubusercontent.com/u/${uid}?v=4`,
    gravatar_id: "",
    url: api,
    html_url: html,
    followers_url: `${api}/followers`,
    following_url: `${api}/following{/other_user}`,
    gists_url: `${api}/gists{/gist_id}`,
    starred_url: `${api}/starred{/owner}{/repo}`,
    subscriptions_url: `${api}/subscriptions`,
    organizations_url: `${api}/orgs`,
    repos_url: `${api}/repos`,
    events_url: `${api}/events{/privacy}`,
    received_events_url: `${api}/received_events`,
    type: kind,
    user_view_type: "public",
    site_admin: false,
  };
}

function appJson(which = app) {
  const base = exOf("GET", "/app", 200);
  return Object.assign(base, {
    id: which.id,
    slug: which.slug,
    client_id: `Iv1.${which.slug}`,
    node_id: `A_${which.id}`,
    name: which.name,
    owner: user("acme-apps", "Organization"),
    description: "",
    external_url: "https://github.com",
    html_url: `https://github.com/apps/${which.slug}`,
    created_at: "2024-01-01T00:00:00Z",
    updated_at: "2024-01-01T00:00:00Z",
    permissions: which === app ? app.permissions : { checks: "write", metadata: "read" },
    events: which === app ? app.events : [],
  });
}

let repoExample = null;
function repoTemplate() {
  repoExample ??= exOf("GET", "/repos/{owner}/{repo}/pulls/{pull_number}", 200).head?.repo ?? {};
  return structuredClone(repoExample);
}

// A repository shaped like the description's "repository" examples; `fork` makes the fork of
// `r` that `forkOwner` owns.
function repoJson(r, fork = null) {
  const owner = fork ?? r.owner;
  const name = `${owner}/${r.name}`;
  const template = repoTemplate();
  const rename = (value) =>
    typeof value === "string" ? value.replaceAll("octocat/Hello-World", name) : value;
  for (const key of Object.keys(template)) template[key] = rename(template[key]);
  const repoId = fork ? r.id + 1_000_000 : r.id;
  return Object.assign(template, {
    id: repoId,
    node_id: Buffer.from(`010:Repository${repoId}`).toString("base64"),
    name: r.name,
    full_name: name,
    owner: user(owner, fork ? "User" : "Organization"),
    private: !!r.private,
    visibility: r.private ? "private" : "public",
    fork: !!fork,
    html_url: `https://github.com/${name}`,
    url: `${baseUrl}/repos/${name}`,
    default_branch: r.default_branch,
  });
}

function installationJson(installationId, base = exOf("GET", "/repos/{owner}/{repo}/installation", 200)) {
  const repos = state.repos.filter((r) => r.installation_id === installationId);
  const account = repos[0]?.owner ?? "acme";
  return Object.assign(base, {
    id: installationId,
    // The listing's schema (GET /app/installations) wants the account to be a user AND an
    // enterprise (`allOf`, where the installation schema says `anyOf`): the enterprise's
    // required fields are added so the answer fits either reading.
    account: Object.assign(user(account, "Organization"), { name: account, slug: account.toLowerCase(), created_at: "2024-01-01T00:00:00Z", updated_at: "2024-01-01T00:00:00Z" }),
    repository_selection: "selected",
    access_tokens_url: `${baseUrl}/app/installations/${installationId}/access_tokens`,
    repositories_url: `${baseUrl}/installation/repositories`,
    html_url: `https://github.com/organizations/${account}/settings/installations/${installationId}`,
    app_id: app.id,
    app_slug: app.slug,
    client_id: `Iv1.${app.slug}`,
    target_id: userId(account),
    target_type: "Organization",
    permissions: app.permissions,
    events: app.events,
    created_at: "2024-01-01T00:00:00Z",
    updated_at: "2024-01-01T00:00:00Z",
    single_file_name: null,
    suspended_by: null,
    suspended_at: null,
  });
}

function labelJson(r, name) {
  const labelId = Math.abs(hash(`${fullName(r)}:${name}`)) % 1_000_000_000;
  return {
    id: labelId,
    node_id: Buffer.from(`05:Label${labelId}`).toString("base64"),
    url: `${baseUrl}/repos/${fullName(r)}/labels/${encodeURIComponent(name)}`,
    name,
    // The pull request schemas want a string here (the label schema allows null).
    description: "",
    color: "ededed",
    default: false,
  };
}
function hash(text) {
  let h = 0;
  for (const c of text) h = (h * 31 + c.charCodeAt(0)) | 0;
  return h;
}

// A pull request: the full object of GET .../pulls/{n}, or the "simple" one of the listing
// (which, like GitHub's, has no `merged`, `mergeable` or counts).
function pullJson(base, p, full) {
  const r = repoOf(p.owner, p.repo);
  const name = fullName(r);
  const api = `${baseUrl}/repos/${name}`;
  const headRepo = p.fork ? repoJson(r, p.fork_owner ?? p.user) : repoJson(r);
  Object.assign(base, {
    url: `${api}/pulls/${p.number}`,
    id: p.id,
    node_id: `PR_${p.id}`,
    html_url: `https://github.com/${name}/pull/${p.number}`,
    diff_url: `https://github.com/${name}/pull/${p.number}.diff`,
    patch_url: `https://github.com/${name}/pull/${p.number}.patch`,
    issue_url: `${api}/issues/${p.number}`,
    commits_url: `${api}/pulls/${p.number}/commits`,
    review_comments_url: `${api}/pulls/${p.number}/comments`,
    review_comment_url: `${api}/pulls/comments{/number}`,
    comments_url: `${api}/issues/${p.number}/comments`,
    statuses_url: `${api}/statuses/${p.head_sha}`,
    number: p.number,
    state: p.state,
    locked: false,
    title: p.title,
    user: user(p.user),
    body: p.body,
    labels: p.labels.map((label) => labelJson(r, label)),
    milestone: null,
    active_lock_reason: null,
    created_at: p.created_at,
    updated_at: p.updated_at,
    closed_at: p.closed_at,
    merged_at: p.merged_at,
    merge_commit_sha: p.merged ? p.merge_commit_sha : null,
    assignee: null,
    assignees: [],
    requested_reviewers: [],
    requested_teams: [],
    head: Object.assign(base.head ?? {}, {
      label: `${headRepo.owner.login}:${p.head_ref}`,
      ref: p.head_ref,
      sha: p.head_sha,
      user: user(headRepo.owner.login, p.fork ? "User" : "Organization"),
      repo: headRepo,
    }),
    base: Object.assign(base.base ?? {}, {
      label: `${r.owner}:${p.base_ref}`,
      ref: p.base_ref,
      sha: p.base_sha,
      user: user(r.owner, "Organization"),
      repo: repoJson(r),
    }),
    author_association: p.fork ? "CONTRIBUTOR" : "MEMBER",
    auto_merge: null,
    draft: !!p.draft,
  });
  for (const key of ["self", "html", "issue", "comments", "review_comments", "review_comment", "commits", "statuses"]) {
    if (base._links?.[key]) base._links[key] = { href: { self: base.url, html: base.html_url, issue: base.issue_url, comments: base.comments_url, review_comments: base.review_comments_url, review_comment: base.review_comment_url, commits: base.commits_url, statuses: base.statuses_url }[key] };
  }
  if (full) {
    Object.assign(base, {
      merged: !!p.merged,
      mergeable: p.state === "open" ? true : null,
      rebaseable: p.state === "open" ? true : null,
      mergeable_state: p.state === "open" ? "clean" : "unknown",
      merged_by: p.merged ? user(p.merged_by ?? r.owner) : null,
      comments: state.comments.filter((c) => c.repo_id === r.id && c.issue_number === p.number).length,
      maintainer_can_modify: false,
    });
  }
  return base;
}

function reactionRollup(commentId, url) {
  const rollup = { url: `${url}/reactions`, total_count: 0, "+1": 0, "-1": 0, laugh: 0, confused: 0, heart: 0, hooray: 0, eyes: 0, rocket: 0 };
  for (const reaction of state.reactions.filter((x) => x.comment_id === commentId)) {
    rollup.total_count += 1;
    rollup[reaction.content] += 1;
  }
  return rollup;
}

function commentJson(base, c) {
  const api = `${baseUrl}/repos/${c.owner}/${c.repo}`;
  const url = `${api}/issues/comments/${c.id}`;
  return Object.assign(base, {
    id: c.id,
    node_id: `IC_${c.id}`,
    url,
    html_url: `https://github.com/${c.owner}/${c.repo}/pull/${c.issue_number}#issuecomment-${c.id}`,
    body: c.body,
    user: user(c.user),
    created_at: c.created_at,
    updated_at: c.updated_at,
    issue_url: `${api}/issues/${c.issue_number}`,
    author_association: c.app ? "NONE" : "COLLABORATOR",
    performed_via_github_app: c.app ? appJson() : null,
    reactions: reactionRollup(c.id, url),
  });
}

function deploymentJson(base, d, r) {
  const api = `${baseUrl}/repos/${fullName(r)}`;
  return Object.assign(base, {
    url: `${api}/deployments/${d.id}`,
    id: d.id,
    node_id: `DE_${d.id}`,
    sha: d.sha,
    ref: d.ref,
    task: d.task,
    payload: d.payload,
    original_environment: d.environment,
    environment: d.environment,
    description: d.description,
    creator: user(d.creator),
    created_at: d.created_at,
    updated_at: d.updated_at,
    statuses_url: `${api}/deployments/${d.id}/statuses`,
    repository_url: api,
    transient_environment: d.transient_environment,
    production_environment: d.production_environment,
    performed_via_github_app: d.app ? appJson() : null,
  });
}

function deploymentStatusJson(base, s, d, r) {
  const api = `${baseUrl}/repos/${fullName(r)}`;
  return Object.assign(base, {
    url: `${api}/deployments/${d.id}/statuses/${s.id}`,
    id: s.id,
    node_id: `DES_${s.id}`,
    state: s.state,
    creator: user(s.creator),
    description: s.description,
    environment: s.environment,
    target_url: s.target_url,
    created_at: s.created_at,
    updated_at: s.updated_at,
    deployment_url: `${api}/deployments/${d.id}`,
    repository_url: api,
    environment_url: s.environment_url,
    log_url: s.log_url,
    performed_via_github_app: s.app ? appJson() : null,
  });
}

function checkRunJson(base, c, r) {
  const api = `${baseUrl}/repos/${fullName(r)}`;
  const pulls = state.pulls.filter((p) => same(p.owner, r.owner) && same(p.repo, r.name) && p.head_sha === c.head_sha && p.state === "open");
  return Object.assign(base, {
    id: c.id,
    head_sha: c.head_sha,
    node_id: `CR_${c.id}`,
    external_id: c.external_id ?? "",
    url: `${api}/check-runs/${c.id}`,
    html_url: `https://github.com/${fullName(r)}/runs/${c.id}`,
    details_url: c.details_url ?? null,
    status: c.status,
    conclusion: c.conclusion ?? null,
    started_at: c.started_at,
    completed_at: c.completed_at ?? null,
    output: {
      title: c.output?.title ?? null,
      summary: c.output?.summary ?? null,
      text: c.output?.text ?? null,
      annotations_count: 0,
      annotations_url: `${api}/check-runs/${c.id}/annotations`,
    },
    name: c.name,
    check_suite: { id: c.check_suite_id },
    app: appJson(c.app === app.slug ? app : ciApp),
    pull_requests: pulls.map((p) => ({
      url: `${api}/pulls/${p.number}`,
      id: p.id,
      number: p.number,
      head: { ref: p.head_ref, sha: p.head_sha, repo: { id: r.id, url: api, name: r.name } },
      base: { ref: p.base_ref, sha: p.base_sha, repo: { id: r.id, url: api, name: r.name } },
    })),
  });
}

function statusJson(s, r) {
  return {
    url: `${baseUrl}/repos/${fullName(r)}/statuses/${s.sha}`,
    avatar_url: null,
    id: s.id,
    node_id: `SC_${s.id}`,
    state: s.state,
    description: s.description ?? null,
    target_url: s.target_url ?? null,
    context: s.context,
    created_at: s.created_at,
    updated_at: s.created_at,
    creator: user(s.creator ?? "ci-bot"),
  };
}

function deliveryJson(d, full = false) {
  const out = {
    id: d.id,
    guid: d.guid,
    delivered_at: d.delivered_at,
    redelivery: d.redelivery,
    duration: d.duration,
    status: d.status,
    status_code: d.status_code,
    event: d.event,
    action: d.action ?? null,
    installation_id: d.installation_id ?? null,
    repository_id: d.repository_id ?? null,
    throttled_at: null,
  };
  if (full) {
    out.url = d.url;
    out.request = { headers: d.headers, payload: d.payload };
    out.response = { headers: d.response_headers ?? {}, payload: d.response_body ?? null };
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Authentication

function jwtProblem(token) {
  const [header, payload, signature] = token.split(".");
  let head, claims;
  try {
    head = JSON.parse(Buffer.from(header, "base64url").toString());
    claims = JSON.parse(Buffer.from(payload, "base64url").toString());
  } catch {
    return "A JSON web token could not be decoded";
  }
  if (head.alg !== "RS256") return "A JSON web token could not be decoded";
  const verifier = crypto.createVerify("RSA-SHA256");
  verifier.update(`${header}.${payload}`);
  if (!verifier.verify(keys.publicKey, Buffer.from(signature, "base64url"))) return "A JSON web token could not be decoded";
  if (String(claims.iss) !== String(app.id)) return `Integration not found for issuer ${claims.iss}`;
  const t = Math.floor(Date.now() / 1000);
  if (!Number.isInteger(claims.iat) || claims.iat > t + 60) {
    return "'Issued at' claim ('iat') must be an Integer representing the time that the assertion was issued.";
  }
  if (!Number.isInteger(claims.exp) || claims.exp <= t) {
    return "'Expiration time' claim ('exp') must be a numeric value representing the future time at which the assertion expires.";
  }
  if (claims.exp > t + 600 + 60) return "'Expiration time' claim ('exp') is too far in the future.";
  return null;
}

// {kind: "jwt"|"installation"|"pat"|"none", installation_id?, login?, token?, error?}
function authenticate(req) {
  const header = req.headers.authorization;
  if (!header) return { kind: "none" };
  const match = /^(Bearer|token)\s+(\S+)\s*$/i.exec(header);
  if (!match) return { kind: "none", error: "Bad credentials" };
  const token = match[2];
  if (token.split(".").length === 3) {
    const error = jwtProblem(token);
    return error ? { kind: "none", error, jwt: true } : { kind: "jwt", token: "app-jwt" };
  }
  const issued = state.tokens[token];
  if (issued) {
    if (Date.parse(issued.expires_at) <= Date.now()) return { kind: "none", error: "Bad credentials", expired: true };
    return { kind: "installation", installation_id: issued.installation_id, token, grant: issued };
  }
  const pat = config.pats.find((p) => p.token === token);
  if (pat) return { kind: "pat", login: pat.login, token };
  const userToken = state.user_tokens[token];
  if (userToken) {
    if (Date.parse(userToken.expires_at) <= Date.now()) return { kind: "none", error: "Bad credentials", expired: true };
    return { kind: "user", login: userToken.login, token };
  }
  return { kind: "none", error: "Bad credentials" };
}

const actorLogin = (auth) => (auth.kind === "pat" ? auth.login : botLogin);
const viaApp = (auth) => auth.kind === "installation";

const notFound = (documentation = DOCS) => [404, { message: "Not Found", documentation_url: documentation, status: "404" }];
const needsJwt = () => [401, { message: "A JSON web token could not be decoded", documentation_url: DOCS, status: "401" }];
const badCredentials = () => [401, { message: "Bad credentials", documentation_url: DOCS, status: "401" }];

// The repository of a repo endpoint, if the caller may use it: an installation token of the
// installation that has it (and, when the token was scoped, among its repositories), or a PAT.
function repoAccess(auth, params) {
  const r = repoOf(params.owner, params.repo);
  if (auth.kind === "pat") return r ? [r, null] : [null, notFound()];
  if (auth.kind === "installation") {
    const scoped = auth.grant.repository_ids;
    if (!r || r.installation_id !== auth.installation_id || (scoped && !scoped.includes(r.id))) return [null, notFound()];
    return [r, null];
  }
  if (auth.kind === "jwt") {
    return [null, [403, { message: "Resource not accessible by integration", documentation_url: DOCS, status: "403" }]];
  }
  return [null, badCredentials()];
}

// ---------------------------------------------------------------------------------------------
// Rate limits: a budget per token (the App's JWTs share one), in windows of an hour from first
// use. Answers 304 cost nothing, like GitHub's conditional requests.

function budgetOf(auth) {
  const key = auth.token ?? "anonymous";
  let budget = budgets.get(key);
  const t = Date.now();
  if (!budget || budget.reset * 1000 <= t) {
    budget = { used: 0, reset: Math.floor(t / 1000) + 3600 };
    budgets.set(key, budget);
  }
  return budget;
}

function rateHeaders(auth, budget) {
  const limit = auth.kind === "none" ? 60 : config.rate_limit;
  return {
    "x-ratelimit-limit": String(limit),
    "x-ratelimit-remaining": String(Math.max(limit - budget.used, 0)),
    "x-ratelimit-used": String(budget.used),
    "x-ratelimit-reset": String(budget.reset),
    "x-ratelimit-resource": "core",
  };
}

function rateLimitMessage(auth) {
  if (auth.kind === "installation") return `API rate limit exceeded for installation ID ${auth.installation_id}.`;
  if (auth.kind === "pat") return `API rate limit exceeded for user ID ${userId(auth.login)}.`;
  if (auth.kind === "jwt") return `API rate limit exceeded for app ID ${app.id}.`;
  return "API rate limit exceeded for 127.0.0.1. (But here's the good news: Authenticated requests get a higher rate limit. Check out the documentation for more details.)";
}

// ---------------------------------------------------------------------------------------------
// Webhook deliveries

async function deliver({ event, payload, installation_id, guid, redelivery = false }) {
  const body = JSON.stringify(payload);
  const headers = {
    "Accept": "*/*",
    "Content-Type": "application/json",
    "User-Agent": "GitHub-Hookshot/standin",
    "X-GitHub-Delivery": guid ?? crypto.randomUUID(),
    "X-GitHub-Event": event,
    "X-GitHub-Hook-ID": "4242",
    "X-GitHub-Hook-Installation-Target-ID": String(app.id),
    "X-GitHub-Hook-Installation-Target-Type": "integration",
    "X-Hub-Signature": "sha1=" + crypto.createHmac("sha1", config.webhook_secret ?? "").update(body).digest("hex"),
    "X-Hub-Signature-256": "sha256=" + crypto.createHmac("sha256", config.webhook_secret ?? "").update(body).digest("hex"),
  };
  const record = {
    id: id(),
    guid: headers["X-GitHub-Delivery"],
    event,
    action: payload?.action ?? null,
    installation_id: installation_id ?? payload?.installation?.id ?? null,
    repository_id: payload?.repository?.id ?? null,
    payload,
    url: config.webhook_url,
    headers,
    redelivery,
    delivered_at: now(),
    duration: 0,
    status_code: 0,
    status: "",
  };
  const started = performance.now();
  try {
    if (!config.webhook_url) throw Object.assign(new Error("no webhook URL"), { code: "no webhook URL configured" });
    const response = await fetch(config.webhook_url, { method: "POST", headers, body, redirect: "manual", signal: AbortSignal.timeout(10_000) });
    record.response_body = (await response.text()).slice(0, 4096);
    record.response_headers = Object.fromEntries(response.headers);
    record.status_code = response.status;
    record.status = response.status >= 200 && response.status < 300 ? "OK" : `Invalid HTTP Response: ${response.status}`;
  } catch (error) {
    // GitHub's words for a delivery without an answer.
    const timeout = error.name === "TimeoutError";
    record.status = timeout ? "timed out" : "failed to connect to host";
    record.error = timeout ? "timeout after 10 s" : String(error.cause?.code ?? error.code ?? error.message);
  }
  record.duration = Math.round(performance.now() - started) / 1000;
  state.deliveries.unshift(record);
  return record;
}

// ---------------------------------------------------------------------------------------------
// Pagination like GitHub's: `per_page` (at most 100) and `page`, with a Link header.

function paginate(items, c) {
  const perPage = Math.min(Math.max(Number(c.query.get("per_page") ?? 30), 1), 100);
  const page = Math.max(Number(c.query.get("page") ?? 1), 1);
  const last = Math.max(1, Math.ceil(items.length / perPage));
  const link = (n) => {
    const query = new URLSearchParams(c.query);
    query.set("page", String(n));
    return `<${baseUrl}${c.path}?${query}>`;
  };
  const links = [];
  if (page > 1) links.push(`${link(page - 1)}; rel="prev"`);
  if (page < last) links.push(`${link(page + 1)}; rel="next"`, `${link(last)}; rel="last"`);
  if (page > 1) links.push(`${link(1)}; rel="first"`);
  return [items.slice((page - 1) * perPage, page * perPage), links.length ? { link: links.join(", ") } : {}];
}

// A weak ETag of an answer, and whether the request's If-None-Match names it.
function conditional(c, body) {
  const etag = `W/"${crypto.createHash("sha256").update(JSON.stringify(body)).digest("hex").slice(0, 40)}"`;
  const sent = c.req.headers["if-none-match"];
  const matches = sent !== undefined && (sent.trim() === "*" || sent.split(",").map((t) => t.trim()).includes(etag));
  return [etag, matches];
}

// ---------------------------------------------------------------------------------------------
// API handlers, by operation: (context) -> [status, body, headers?]

function commitSha(r, ref) {
  if (/^[0-9a-f]{40}$/i.test(ref)) return ref.toLowerCase();
  const branch = ref.replace(/^refs\/heads\//, "").replace(/^heads\//, "");
  const pull = state.pulls.find((p) => same(p.owner, r.owner) && same(p.repo, r.name) && p.head_ref === branch);
  return pull?.head_sha ?? null;
}

// Every context on a commit with its latest state: commit statuses and check runs.
function contextsOn(r, sha) {
  const latest = new Map();
  for (const s of state.statuses.filter((x) => x.repo_id === r.id && x.sha === sha)) latest.set(s.context, s.state);
  for (const run of state.check_runs.filter((x) => x.repo_id === r.id && x.head_sha === sha)) {
    latest.set(run.name, run.status !== "completed" ? "pending" : ["success", "neutral", "skipped"].includes(run.conclusion) ? "success" : "failure");
  }
  return latest;
}

// The permission `login` was given on `r` ("none" when none).
function permissionOf(r, login) {
  const given = state.permissions[fullName(r).toLowerCase()]?.[login.toLowerCase()];
  return given && given !== "not-a-user" ? given : "none";
}

// The installed repositories `login` has explicit permission on.
function userRepos(login) {
  return state.repos.filter((r) => r.installation_id != null && permissionOf(r, login) !== "none");
}

function userTokenOnly(c) {
  if (c.auth.kind === "none") return badCredentials();
  return [403, { message: "You must authenticate with an access token authorized to a GitHub App in order to list installations", documentation_url: DOCS, status: "403" }];
}

// GitHub's web flow (github.com/login/oauth/...), outside the REST API and its description:
// checked here against GitHub's documentation of the flow instead.
// https://docs.github.com/apps/creating-github-apps/authenticating-with-a-github-app/generating-a-user-access-token-for-a-github-app
function oauth(req, res, url, raw) {
  const problem = (reason) => {
    violations.push({ kind: "request", method: req.method, path: url.pathname, operation: "oauth", reason });
    return send(res, 400, { message: reason });
  };
  if (req.method === "GET" && url.pathname === "/login/oauth/authorize") {
    const q = url.searchParams;
    const known = ["client_id", "redirect_uri", "state", "login", "allow_signup", "prompt", "code_challenge", "code_challenge_method", "scope", "response_type"];
    const unknown = [...q.keys()].filter((k) => !known.includes(k));
    if (unknown.length) return problem(`unknown parameters ${unknown.join(", ")}`);
    if (q.get("client_id") !== config.client_id) return problem(`client_id ${q.get("client_id")} is not the App's (${config.client_id})`);
    const redirect = q.get("redirect_uri");
    if (!redirect || !/^https?:\/\//.test(redirect)) return problem("redirect_uri must be the App's callback URL");
    const back = new URL(redirect);
    if (q.get("state")) back.searchParams.set("state", q.get("state"));
    if (!config.oauth_user) {
      back.searchParams.set("error", "access_denied");
      back.searchParams.set("error_description", "The user has denied your application access.");
    } else {
      const code = crypto.randomBytes(10).toString("hex");
      state.oauth_codes[code] = { login: config.oauth_user, redirect_uri: redirect, expires_at: Date.now() + 600_000 };
      back.searchParams.set("code", code);
    }
    res.writeHead(302, { location: back.toString(), "content-type": "text/html; charset=utf-8" });
    return res.end("");
  }
  if (req.method === "POST" && url.pathname === "/login/oauth/access_token") {
    const type = req.headers["content-type"] ?? "";
    const body = type.startsWith("application/json") ? JSON.parse(raw || "{}") : Object.fromEntries(new URLSearchParams(raw));
    if (!String(req.headers.accept ?? "").includes("application/json")) return problem("send Accept: application/json to get JSON (GitHub answers form-encoded otherwise)");
    for (const name of ["client_id", "client_secret", "code"]) if (!body[name]) return problem(`${name} is required`);
    const answer = (value) => send(res, 200, value);
    if (body.client_id !== config.client_id || body.client_secret !== config.client_secret) {
      return answer({ error: "incorrect_client_credentials", error_description: "The client_id and/or client_secret passed are incorrect.", error_uri: "https://docs.github.com/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors/#incorrect-client-credentials" });
    }
    const grant = state.oauth_codes[body.code];
    delete state.oauth_codes[body.code];
    if (!grant || grant.expires_at <= Date.now() || (body.redirect_uri && body.redirect_uri !== grant.redirect_uri)) {
      return answer({ error: "bad_verification_code", error_description: "The code passed is incorrect or expired.", error_uri: "https://docs.github.com/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors/#bad-verification-code" });
    }
    const token = "ghu_" + crypto.randomBytes(18).toString("base64url").replace(/[-_]/g, "x");
    state.user_tokens[token] = { login: grant.login, expires_at: isoSeconds(Date.now() + 28_800_000) };
    return answer({ access_token: token, expires_in: 28800, refresh_token: "ghr_" + crypto.randomBytes(30).toString("hex"), refresh_token_expires_in: 15811200, scope: "", token_type: "bearer" });
  }
  return send(res, 404, { message: "Not Found" });
}

const handlers = {
  "GET /app": (c) => (c.auth.kind === "jwt" ? [200, appJson()] : needsJwt()),

  // The user a token belongs to: a personal access token's. An App's JWT or installation token
  // is no user, and GitHub says so.
  "GET /user": (c) => {
    if (c.auth.kind === "pat" || c.auth.kind === "user") {
      const base = ex(c.entry, 200);
      return [200, Object.assign(base, user(c.auth.login), { user_view_type: "private", created_at: "2024-01-01T00:00:00Z", updated_at: "2024-01-01T00:00:00Z" })];
    }
    if (c.auth.kind === "jwt" || c.auth.kind === "installation") {
      return [403, { message: "Resource not accessible by integration", documentation_url: "https://docs.github.com/rest/users/users#get-the-authenticated-user", status: "403" }];
    }
    return [401, { message: "Requires authentication", documentation_url: "https://docs.github.com/rest/users/users#get-the-authenticated-user", status: "401" }];
  },

  "POST /app/installations/{installation_id}/access_tokens": (c) => {
    if (c.auth.kind !== "jwt") return needsJwt();
    const installation = Number(c.params.installation_id);
    const installed = state.repos.filter((r) => r.installation_id === installation);
    if (!installed.length) return notFound();
    let scoped = null;
    if (c.body?.repositories || c.body?.repository_ids) {
      const wanted = [
        ...(c.body.repository_ids ?? []).map((rid) => installed.find((r) => r.id === rid)),
        ...(c.body.repositories ?? []).map((n) => installed.find((r) => same(r.name, n))),
      ];
      if (wanted.some((r) => !r)) {
        return [422, { message: "There is at least one repository that does not exist or is not accessible to the parent installation.", documentation_url: DOCS, status: "422" }];
      }
      scoped = wanted.map((r) => r.id);
    }
    const token = "ghs_" + crypto.randomBytes(18).toString("base64url").replace(/[-_]/g, "x");
    const expires_at = isoSeconds(Date.now() + config.token_ttl_seconds * 1000);
    const permissions = c.body?.permissions ?? app.permissions;
    state.tokens[token] = { installation_id: installation, expires_at, repository_ids: scoped, permissions };
    state.tokens_issued[installation] = (state.tokens_issued[installation] ?? 0) + 1;
    const answer = Object.assign(ex(c.entry, 201), { token, expires_at, permissions, repository_selection: "selected" });
    if (scoped) answer.repositories = installed.filter((r) => scoped.includes(r.id)).map((r) => repoJson(r));
    else delete answer.repositories;
    return [201, answer];
  },

  // A user access token (the App's user authorization) sees the App's installations and the
  // repositories in them it has explicit permission on, as GitHub lists them.
  "GET /user/installations": (c) => {
    if (c.auth.kind !== "user") return userTokenOnly(c);
    const ids = [...new Set(userRepos(c.auth.login).map((r) => r.installation_id))].sort((a, b) => a - b);
    const base = first(ex(c.entry, 200).installations);
    const [page, headers] = paginate(ids.map((i) => installationJson(i, structuredClone(base))), c);
    return [200, { total_count: ids.length, installations: page }, headers];
  },

  "GET /user/installations/{installation_id}/repositories": (c) => {
    if (c.auth.kind !== "user") return userTokenOnly(c);
    const installation = Number(c.params.installation_id);
    const repos = userRepos(c.auth.login).filter((r) => r.installation_id === installation);
    if (!repos.length) return notFound();
    const [page, headers] = paginate(repos.map((r) => {
      const rank = ["none", "read", "triage", "write", "maintain", "admin"].indexOf(permissionOf(r, c.auth.login));
      return Object.assign(repoJson(r), { permissions: { admin: rank >= 5, maintain: rank >= 4, push: rank >= 3, triage: rank >= 2, pull: rank >= 1 } });
    }), c);
    return [200, { total_count: repos.length, repository_selection: "selected", repositories: page }, headers];
  },

  "GET /user/memberships/orgs/{org}": (c) => {
    if (c.auth.kind !== "user" && c.auth.kind !== "pat") return userTokenOnly(c);
    if (!(state.org_members[c.params.org.toLowerCase()] ?? []).includes(c.auth.login.toLowerCase())) return notFound();
    const base = ex(c.entry, 200);
    return [200, Object.assign(base, {
      state: "active",
      role: "member",
      url: `${baseUrl}/orgs/${c.params.org}/memberships/${c.auth.login}`,
      organization_url: `${baseUrl}/orgs/${c.params.org}`,
      organization: Object.assign(base.organization ?? {}, { login: c.params.org, id: userId(c.params.org), url: `${baseUrl}/orgs/${c.params.org}` }),
      user: Object.assign(base.user ?? {}, user(c.auth.login)),
    })];
  },

  "GET /orgs/{org}/teams/{team_slug}/memberships/{username}": (c) => {
    if (c.auth.kind === "none") return badCredentials();
    const key = `${c.params.org}/${c.params.team_slug}`.toLowerCase();
    if (!(state.team_members[key] ?? []).includes(c.params.username.toLowerCase())) return notFound();
    return [200, Object.assign(ex(c.entry, 200), {
      url: `${baseUrl}/organizations/${userId(c.params.org)}/team/${hash(key) >>> 0}/memberships/${c.params.username}`,
      role: "member",
      state: "active",
    })];
  },

  "GET /app/installations": (c) => {
    if (c.auth.kind !== "jwt") return needsJwt();
    const ids = [...new Set(state.repos.map((r) => r.installation_id).filter((i) => i != null))].sort((a, b) => a - b);
    const base = first(ex(c.entry, 200));
    const [page, headers] = paginate(ids.map((i) => installationJson(i, structuredClone(base))), c);
    return [200, page, headers];
  },

  "GET /app/installations/{installation_id}": (c) => {
    if (c.auth.kind !== "jwt") return needsJwt();
    const installation = Number(c.params.installation_id);
    if (!state.repos.some((r) => r.installation_id === installation)) return notFound();
    return [200, installationJson(installation, ex(c.entry, 200))];
  },

  "GET /repos/{owner}/{repo}/installation": (c) => {
    if (c.auth.kind !== "jwt") return needsJwt();
    const r = repoOf(c.params.owner, c.params.repo);
    if (!r || r.installation_id == null) return notFound("https://docs.github.com/rest/apps/apps#get-a-repository-installation-for-the-authenticated-app");
    return [200, installationJson(r.installation_id, ex(c.entry, 200))];
  },

  "GET /installation/repositories": (c) => {
    if (c.auth.kind !== "installation") return [403, { message: "This endpoint requires you to be authenticated as an installation.", documentation_url: DOCS, status: "403" }];
    const scoped = c.auth.grant.repository_ids;
    const repos = state.repos.filter((r) => r.installation_id === c.auth.installation_id && (!scoped || scoped.includes(r.id)));
    const [page, headers] = paginate(repos.map((r) => repoJson(r)), c);
    return [200, { total_count: repos.length, repository_selection: "selected", repositories: page }, headers];
  },

  "GET /app/hook/deliveries": (c) => {
    if (c.auth.kind !== "jwt") return needsJwt();
    const perPage = Math.min(Math.max(Number(c.query.get("per_page") ?? 30), 1), 100);
    const cursor = c.query.get("cursor");
    let below = Infinity;
    if (cursor) {
      const m = /^v1_(\d+)$/.exec(cursor);
      if (!m) return [422, { message: `Invalid cursor: ${cursor}`, documentation_url: DOCS, status: "422" }];
      below = Number(m[1]);
    }
    const wanted = c.query.get("status");
    const all = [...state.deliveries]
      .sort((a, b) => b.id - a.id)
      .filter((d) => d.id <= below)
      .filter((d) => !wanted || (wanted === "success") === (d.status === "OK"));
    const page = all.slice(0, perPage);
    const headers = {};
    if (all.length > perPage) {
      const query = new URLSearchParams(c.query);
      query.set("per_page", String(perPage));
      query.set("cursor", `v1_${all[perPage].id}`);
      headers.link = `<${baseUrl}${c.path}?${query}>; rel="next"`;
    }
    return [200, page.map((d) => deliveryJson(d)), headers];
  },

  "GET /app/hook/deliveries/{delivery_id}": (c) => {
    if (c.auth.kind !== "jwt") return needsJwt();
    const d = state.deliveries.find((x) => x.id === Number(c.params.delivery_id));
    return d ? [200, deliveryJson(d, true)] : notFound();
  },

  "POST /app/hook/deliveries/{delivery_id}/attempts": (c) => {
    if (c.auth.kind !== "jwt") return needsJwt();
    const d = state.deliveries.find((x) => x.id === Number(c.params.delivery_id));
    if (!d) return notFound();
    // GitHub accepts at once and delivers afterwards: a new delivery, same guid.
    setTimeout(() => {
      deliver({ event: d.event, payload: d.payload, installation_id: d.installation_id, guid: d.guid, redelivery: true }).catch((e) =>
        process.stderr.write(`redelivery failed: ${e.stack}\n`),
      );
    }, 10);
    return [202, {}];
  },

  "GET /repos/{owner}/{repo}/contents/{path}": (c) => {
    const [r, denied] = repoAccess(c.auth, c.params);
    if (denied) return denied;
    const ref = c.query.get("ref") ?? r.default_branch;
    const path = c.params.path.replace(/^\/+|\/+$/g, "");
    const refs = [ref, commitSha(r, ref)].filter(Boolean);
    const tree = refs.map((x) => state.files[`${fullName(r)}@${x}`.toLowerCase()]).find(Boolean);
    const missing = notFound("https://docs.github.com/rest/repos/contents#get-repository-content");
    if (!tree) return refs.length > 1 || /^[0-9a-f]{40}$/i.test(ref) || ref === r.default_branch ? missing : [404, { message: `No commit found for the ref ${ref}`, documentation_url: DOCS, status: "404" }];
    const api = `${baseUrl}/repos/${fullName(r)}`;
    const entry = (p, type, text) => ({
      name: p.split("/").pop(),
      path: p,
      sha: type === "file" ? blobSha(text) : crypto.createHash("sha1").update(`tree ${p}`).digest("hex"),
      size: type === "file" ? Buffer.byteLength(text) : 0,
      url: `${api}/contents/${p}?ref=${encodeURIComponent(ref)}`,
      html_url: `https://github.com/${fullName(r)}/${type === "file" ? "blob" : "tree"}/${ref}/${p}`,
      git_url: `${api}/git/${type === "file" ? "blobs" : "trees"}/${type === "file" ? blobSha(text) : "0".repeat(40)}`,
      download_url: type === "file" ? `https://raw.githubusercontent.com/${fullName(r)}/${ref}/${p}` : null,
      type,
    });
    const withLinks = (e) => Object.assign(e, { _links: { self: e.url, git: e.git_url, html: e.html_url } });
    const text = tree[path];
    if (text != null) {
      const file = withLinks(entry(path, "file", text));
      // As GitHub: a file over 1 MB comes without its content (`encoding: "none"`), its size given.
      if (file.size > 1024 * 1024) return [200, Object.assign(file, { encoding: "none", content: "" })];
      const content = Buffer.from(text).toString("base64").replace(/(.{60})/g, "$1\n") + "\n";
      return [200, Object.assign(file, { encoding: "base64", content })];
    }
    // A directory: its files and subdirectories.
    const prefix = path === "" ? "" : `${path}/`;
    const children = new Map();
    for (const [p, t] of Object.entries(tree)) {
      if (!p.startsWith(prefix)) continue;
      const rest = p.slice(prefix.length).split("/");
      const childPath = prefix + rest[0];
      if (!children.has(childPath)) children.set(childPath, rest.length === 1 ? entry(childPath, "file", t) : entry(childPath, "dir"));
    }
    if (!children.size) return missing;
    return [200, [...children.values()].sort((a, b) => a.path.localeCompare(b.path)).map(withLinks)];
  },

  "GET /repos/{owner}/{repo}/collaborators/{username}/permission": (c) => {
    const [r, denied] = repoAccess(c.auth, c.params);
    if (denied) return denied;
    const login = c.params.username;
    const given = state.permissions[fullName(r).toLowerCase()]?.[login.toLowerCase()];
    if (given === "not-a-user") return [404, { message: `${login} is not a user`, documentation_url: DOCS, status: "404" }];
    // An existing user who is no collaborator: `read` on a public repository (anyone can read
    // it), `none` on a private one.
    const role = given ?? (r.private ? "none" : "read");
    const permission = { maintain: "write", triage: "read" }[role] ?? role;
    const rank = ["none", "read", "triage", "write", "maintain", "admin"].indexOf(role);
    const base = ex(c.entry, 200);
    return [200, Object.assign(base, {
      permission,
      role_name: role === "none" ? "none" : role,
      user: Object.assign(base.user ?? {}, user(login), {
        permissions: { admin: rank >= 5, maintain: rank >= 4, push: rank >= 3, triage: rank >= 2, pull: rank >= 1 },
        role_name: role,
      }),
    })];
  },

  "GET /repos/{owner}/{repo}/pulls": (c) => {
    const [r, denied] = repoAccess(c.auth, c.params);
    if (denied) return denied;
    const wanted = c.query.get("state") ?? "open";
    const head = c.query.get("head");
    const baseRef = c.query.get("base");
    const template = first(ex(c.entry, 200));
    const direction = c.query.get("direction") ?? "desc";
    const pulls = state.pulls
      .filter((p) => same(p.owner, r.owner) && same(p.repo, r.name))
      .filter((p) => wanted === "all" || p.state === wanted)
      .filter((p) => !baseRef || p.base_ref === baseRef)
      .filter((p) => !head || head === `${p.fork ? (p.fork_owner ?? p.user) : r.owner}:${p.head_ref}`)
      .sort((a, b) => (direction === "asc" ? a.number - b.number : b.number - a.number));
    const [page, headers] = paginate(pulls.map((p) => pullJson(structuredClone(template), p, false)), c);
    const [etag, unchanged] = conditional(c, page);
    if (unchanged) return [304, null, { etag }];
    return [200, page, { ...headers, etag }];
  },

  "GET /repos/{owner}/{repo}/pulls/{pull_number}": (c) => {
    const [r, denied] = repoAccess(c.auth, c.params);
    if (denied) return denied;
    const p = state.pulls.find((x) => same(x.owner, r.owner) && same(x.repo, r.name) && x.number === Number(c.params.pull_number));
    if (!p) return notFound();
    const body = pullJson(ex(c.entry, 200), p, true);
    const [etag, unchanged] = conditional(c, body);
    return unchanged ? [304, null, { etag }] : [200, body, { etag }];
  },

  "GET /repos/{owner}/{repo}/issues/{issue_number}/comments": (c) => {
    const [r, denied] = repoAccess(c.auth, c.params);
    if (denied) return denied;
    const template = first(ex(c.entry, 200));
    const since = c.query.get("since");
    const list = state.comments
      .filter((x) => x.repo_id === r.id && x.issue_number === Number(c.params.issue_number))
      .filter((x) => !since || x.updated_at >= since);
    const [page, headers] = paginate(list.map((x) => commentJson(structuredClone(template), x)), c);
    return [200, page, headers];
  },

  "POST /repos/{owner}/{repo}/issues/{issue_number}/comments": (c) => {
    const [r, denied] = repoAccess(c.auth, c.params);
    if (denied) return denied;
    const t = now();
    const comment = {
      id: id(), repo_id: r.id, owner: r.owner, repo: r.name, issue_number: Number(c.params.issue_number), body: c.body.body,
      user: actorLogin(c.auth), app: viaApp(c.auth), created_at: t, updated_at: t, edits: 0, history: [],
    };
    state.comments.push(comment);
    const answer = commentJson(ex(c.entry, 201), comment);
    return [201, answer, { location: answer.url }];
  },

  "GET /repos/{owner}/{repo}/issues/comments/{comment_id}": (c) => {
    const [r, denied] = repoAccess(c.auth, c.params);
    if (denied) return denied;
    const comment = state.comments.find((x) => x.repo_id === r.id && x.id === Number(c.params.comment_id));
    return comment ? [200, commentJson(ex(c.entry, 200), comment)] : notFound();
  },

  // Anyone with write access may edit any comment on GitHub; the edit history records who did.
  "PATCH /repos/{owner}/{repo}/issues/comments/{comment_id}": (c) => {
    const [r, denied] = repoAccess(c.auth, c.params);
    if (denied) return denied;
    const comment = state.comments.find((x) => x.repo_id === r.id && x.id === Number(c.params.comment_id));
    if (!comment) return notFound();
    comment.history.push({ body: comment.body, edited_by: actorLogin(c.auth), at: now() });
    comment.body = c.body.body;
    comment.updated_at = now();
    comment.edits += 1;
    return [200, commentJson(ex(c.entry, 200), comment)];
  },

  "DELETE /repos/{owner}/{repo}/issues/comments/{comment_id}": (c) => {
    const [r, denied] = repoAccess(c.auth, c.params);
    if (denied) return denied;
    const index = state.comments.findIndex((x) => x.repo_id === r.id && x.id === Number(c.params.comment_id));
    if (index < 0) return notFound();
    state.comments.splice(index, 1);
    return [204, null];
  },

  // GitHub answers with the labels left on the issue, or 404 when the label is not on it.
  "DELETE /repos/{owner}/{repo}/issues/{issue_number}/labels/{name}": (c) => {
    const [r, denied] = repoAccess(c.auth, c.params);
    if (denied) return denied;
    const p = state.pulls.find((x) => same(x.owner, r.owner) && same(x.repo, r.name) && x.number === Number(c.params.issue_number));
    if (!p) return notFound();
    const index = p.labels.findIndex((l) => same(l, c.params.name));
    if (index < 0) return [404, { ...notFound("https://docs.github.com/rest/issues/labels#remove-a-label-from-an-issue")[1], message: "Label does not exist" }];
    p.labels.splice(index, 1);
    p.updated_at = now();
    return [200, p.labels.map((name) => labelJson(r, name))];
  },

  "GET /repos/{owner}/{repo}/issues/comments/{comment_id}/reactions": (c) => {
    const [r, denied] = repoAccess(c.auth, c.params);
    if (denied) return denied;
    const comment = state.comments.find((x) => x.repo_id === r.id && x.id === Number(c.params.comment_id));
    if (!comment) return notFound();
    const template = first(ex(c.entry, 200));
    const list = state.reactions
      .filter((x) => x.comment_id === comment.id && (!c.query.get("content") || x.content === c.query.get("content")))
      .map((x) => Object.assign(structuredClone(template), { id: x.id, node_id: `REA_${x.id}`, content: x.content, user: user(x.user), created_at: x.created_at }));
    const [page, headers] = paginate(list, c);
    return [200, page, headers];
  },

  "POST /repos/{owner}/{repo}/issues/comments/{comment_id}/reactions": (c) => {
    const [r, denied] = repoAccess(c.auth, c.params);
    if (denied) return denied;
    const comment = state.comments.find((x) => x.repo_id === r.id && x.id === Number(c.params.comment_id));
    if (!comment) return notFound();
    const login = actorLogin(c.auth);
    let reaction = state.reactions.find((x) => x.comment_id === comment.id && x.content === c.body.content && x.user === login);
    const status = reaction ? 200 : 201;
    if (!reaction) {
      reaction = { id: id(), comment_id: comment.id, content: c.body.content, user: login, created_at: now() };
      state.reactions.push(reaction);
    }
    return [status, Object.assign(ex(c.entry, status), { id: reaction.id, node_id: `REA_${reaction.id}`, content: reaction.content, user: user(login), created_at: reaction.created_at })];
  },

  "GET /repos/{owner}/{repo}/deployments": (c) => {
    const [r, denied] = repoAccess(c.auth, c.params);
    if (denied) return denied;
    const template = first(ex(c.entry, 200));
    const q = (name) => c.query.get(name);
    const list = state.deployments
      .filter((d) => d.repo_id === r.id)
      .filter((d) => !q("sha") || d.sha === q("sha").toLowerCase())
      .filter((d) => !q("ref") || d.ref === q("ref"))
      .filter((d) => !q("task") || d.task === q("task"))
      .filter((d) => !q("environment") || d.environment === q("environment"))
      .sort((a, b) => b.id - a.id);
    const [page, headers] = paginate(list.map((d) => deploymentJson(structuredClone(template), d, r)), c);
    return [200, page, headers];
  },

  "GET /repos/{owner}/{repo}/deployments/{deployment_id}": (c) => {
    const [r, denied] = repoAccess(c.auth, c.params);
    if (denied) return denied;
    const d = state.deployments.find((x) => x.repo_id === r.id && x.id === Number(c.params.deployment_id));
    return d ? [200, deploymentJson(ex(c.entry, 200), d, r)] : notFound();
  },

  "POST /repos/{owner}/{repo}/deployments": (c) => {
    const [r, denied] = repoAccess(c.auth, c.params);
    if (denied) return denied;
    const b = c.body;
    const sha = commitSha(r, b.ref);
    if (!sha) return [422, { message: `No ref found for: ${b.ref}`, documentation_url: "https://docs.github.com/rest/deployments/deployments#create-a-deployment", status: "422" }];
    // Without `required_contexts` GitHub checks every context on the commit; with it, those.
    const contexts = contextsOn(r, sha);
    const required = b.required_contexts ?? [...contexts.keys()];
    const failing = required.filter((name) => contexts.get(name) !== "success");
    if (failing.length) {
      return [409, {
        message: `Conflict: Commit status checks failed for ${b.ref}.`,
        errors: [{ contexts: failing.map((name) => ({ context: name, state: contexts.get(name) ?? "missing" })), resource: "Deployment", field: "required_contexts", code: "invalid" }],
        documentation_url: "https://docs.github.com/rest/deployments/deployments#create-a-deployment",
        status: "409",
      }];
    }
    const environment = b.environment ?? "production";
    const t = now();
    const d = {
      id: id(), repo_id: r.id, ref: b.ref, sha, task: b.task ?? "deploy", environment,
      payload: b.payload ?? {}, description: b.description ?? null,
      transient_environment: b.transient_environment ?? false,
      production_environment: b.production_environment ?? environment === "production",
      auto_merge: b.auto_merge ?? true, required_contexts: b.required_contexts ?? null,
      creator: actorLogin(c.auth), app: viaApp(c.auth), created_at: t, updated_at: t, statuses: [],
    };
    state.deployments.push(d);
    return [201, deploymentJson(ex(c.entry, 201), d, r)];
  },

  "DELETE /repos/{owner}/{repo}/deployments/{deployment_id}": (c) => {
    const [r, denied] = repoAccess(c.auth, c.params);
    if (denied) return denied;
    const d = state.deployments.find((x) => x.repo_id === r.id && x.id === Number(c.params.deployment_id));
    if (!d) return notFound();
    const others = state.deployments.filter((x) => x !== d && x.repo_id === r.id && x.environment === d.environment);
    if (d.statuses.at(-1)?.state !== "inactive" && others.length) {
      return [422, { message: "We cannot delete an active deployment unless it is the only deployment in a given environment.", documentation_url: DOCS, status: "422" }];
    }
    state.deployments.splice(state.deployments.indexOf(d), 1);
    return [204, null];
  },

  "GET /repos/{owner}/{repo}/deployments/{deployment_id}/statuses": (c) => {
    const [r, denied] = repoAccess(c.auth, c.params);
    if (denied) return denied;
    const d = state.deployments.find((x) => x.repo_id === r.id && x.id === Number(c.params.deployment_id));
    if (!d) return notFound();
    const template = first(ex(c.entry, 200));
    const [page, headers] = paginate([...d.statuses].reverse().map((s) => deploymentStatusJson(structuredClone(template), s, d, r)), c);
    return [200, page, headers];
  },

  "GET /repos/{owner}/{repo}/deployments/{deployment_id}/statuses/{status_id}": (c) => {
    const [r, denied] = repoAccess(c.auth, c.params);
    if (denied) return denied;
    const d = state.deployments.find((x) => x.repo_id === r.id && x.id === Number(c.params.deployment_id));
    const s = d?.statuses.find((x) => x.id === Number(c.params.status_id));
    return s ? [200, deploymentStatusJson(ex(c.entry, 200), s, d, r)] : notFound();
  },

  "POST /repos/{owner}/{repo}/deployments/{deployment_id}/statuses": (c) => {
    const [r, denied] = repoAccess(c.auth, c.params);
    if (denied) return denied;
    const d = state.deployments.find((x) => x.repo_id === r.id && x.id === Number(c.params.deployment_id));
    if (!d) return notFound();
    const b = c.body;
    if ((b.description ?? "").length > 140) {
      return [422, { message: "Validation Failed", errors: [{ resource: "DeploymentStatus", code: "custom", field: "description", message: "description is too long (maximum is 140 characters)" }], documentation_url: DOCS, status: "422" }];
    }
    const t = now();
    const logUrl = b.log_url ?? b.target_url ?? "";
    const s = {
      id: id(), state: b.state, description: b.description ?? "",
      environment: b.environment ?? d.statuses.at(-1)?.environment ?? d.environment,
      environment_url: b.environment_url ?? "", log_url: logUrl, target_url: logUrl,
      creator: actorLogin(c.auth), app: viaApp(c.auth), created_at: t, updated_at: t,
    };
    d.statuses.push(s);
    d.updated_at = t;
    // auto_inactive (default true): a success makes the earlier successful deployments of the
    // environment inactive.
    if (s.state === "success" && b.auto_inactive !== false) {
      for (const other of state.deployments) {
        if (other.id < d.id && other.repo_id === r.id && other.environment === d.environment && other.statuses.at(-1)?.state === "success") {
          other.statuses.push({ ...other.statuses.at(-1), id: id(), state: "inactive", created_at: t, updated_at: t, auto_inactive: true });
        }
      }
    }
    return [201, deploymentStatusJson(ex(c.entry, 201), s, d, r)];
  },

  "GET /repos/{owner}/{repo}/commits/{ref}/check-runs": (c) => {
    const [r, denied] = repoAccess(c.auth, c.params);
    if (denied) return denied;
    const sha = commitSha(r, c.params.ref) ?? c.params.ref;
    const q = (name) => c.query.get(name);
    let list = state.check_runs
      .filter((x) => x.repo_id === r.id && x.head_sha === sha)
      .filter((x) => !q("check_name") || x.name === q("check_name"))
      .filter((x) => !q("status") || x.status === q("status"))
      .filter((x) => !q("app_id") || Number(q("app_id")) === (x.app === app.slug ? app.id : ciApp.id))
      .sort((a, b) => b.id - a.id);
    // filter=latest (the default): the newest run of each name.
    if ((q("filter") ?? "latest") === "latest") {
      const seen = new Set();
      list = list.filter((x) => !seen.has(`${x.app}/${x.name}`) && seen.add(`${x.app}/${x.name}`));
    }
    const template = first(ex(c.entry, 200).check_runs);
    const [page, headers] = paginate(list.map((x) => checkRunJson(structuredClone(template), x, r)), c);
    return [200, { total_count: list.length, check_runs: page }, headers];
  },

  "GET /repos/{owner}/{repo}/commits/{ref}/status": (c) => {
    const [r, denied] = repoAccess(c.auth, c.params);
    if (denied) return denied;
    const sha = commitSha(r, c.params.ref);
    if (!sha) return [422, { message: `No commit found for SHA: ${c.params.ref}`, documentation_url: DOCS, status: "422" }];
    const latest = new Map();
    for (const s of state.statuses.filter((x) => x.repo_id === r.id && x.sha === sha).sort((a, b) => a.id - b.id)) latest.set(s.context, s);
    const list = [...latest.values()];
    const combined = list.some((s) => s.state === "failure" || s.state === "error")
      ? "failure"
      : list.length && list.every((s) => s.state === "success")
        ? "success"
        : "pending";
    const [page, headers] = paginate(list.map((s) => statusJson(s, r)), c);
    return [200, Object.assign(ex(c.entry, 200), {
      state: combined, statuses: page, sha, total_count: list.length, repository: repoJson(r),
      commit_url: `${baseUrl}/repos/${fullName(r)}/commits/${sha}`, url: `${baseUrl}/repos/${fullName(r)}/commits/${sha}/status`,
    }), headers];
  },

  "GET /repos/{owner}/{repo}/commits/{ref}/statuses": (c) => {
    const [r, denied] = repoAccess(c.auth, c.params);
    if (denied) return denied;
    const sha = commitSha(r, c.params.ref) ?? c.params.ref;
    const list = state.statuses.filter((x) => x.repo_id === r.id && x.sha === sha).sort((a, b) => b.id - a.id);
    const [page, headers] = paginate(list.map((s) => statusJson(s, r)), c);
    return [200, page, headers];
  },

  "POST /repos/{owner}/{repo}/statuses/{sha}": (c) => {
    const [r, denied] = repoAccess(c.auth, c.params);
    if (denied) return denied;
    if (!/^[0-9a-f]{40}$/i.test(c.params.sha)) return [422, { message: `No commit found for SHA: ${c.params.sha}`, documentation_url: DOCS, status: "422" }];
    const s = {
      id: id(), repo_id: r.id, sha: c.params.sha.toLowerCase(), context: c.body.context ?? "default", state: c.body.state,
      description: c.body.description ?? null, target_url: c.body.target_url ?? null, creator: actorLogin(c.auth), created_at: now(),
    };
    state.statuses.push(s);
    return [201, Object.assign(ex(c.entry, 201), statusJson(s, r))];
  },

  "POST /repos/{owner}/{repo}/check-runs": (c) => {
    if (c.auth.kind === "pat") return [403, { message: "You must authenticate via a GitHub App.", documentation_url: DOCS, status: "403" }];
    const [r, denied] = repoAccess(c.auth, c.params);
    if (denied) return denied;
    const b = c.body;
    if ((b.status === "completed" || b.completed_at) && !b.conclusion) {
      return [422, { message: "Invalid request.\n\nNo subschema in \"anyOf\" matched.\n\"conclusion\" wasn't supplied.", documentation_url: DOCS, status: "422" }];
    }
    const t = now();
    const status = b.conclusion ? "completed" : (b.status ?? "queued");
    const run = {
      id: id(), repo_id: r.id, name: b.name, head_sha: b.head_sha, status, conclusion: b.conclusion ?? null,
      output: b.output, details_url: b.details_url, external_id: b.external_id, app: app.slug,
      started_at: b.started_at ?? t, completed_at: status === "completed" ? (b.completed_at ?? t) : null,
      check_suite_id: 5000 + r.id, history: [],
    };
    run.history.push({ status: run.status, conclusion: run.conclusion, at: t });
    state.check_runs.push(run);
    return [201, checkRunJson(ex(c.entry, 201), run, r)];
  },

  "GET /repos/{owner}/{repo}/check-runs/{check_run_id}": (c) => {
    const [r, denied] = repoAccess(c.auth, c.params);
    if (denied) return denied;
    const run = state.check_runs.find((x) => x.repo_id === r.id && x.id === Number(c.params.check_run_id));
    return run ? [200, checkRunJson(ex(c.entry, 200), run, r)] : notFound();
  },

  "PATCH /repos/{owner}/{repo}/check-runs/{check_run_id}": (c) => {
    if (c.auth.kind === "pat") return [403, { message: "You must authenticate via a GitHub App.", documentation_url: DOCS, status: "403" }];
    const [r, denied] = repoAccess(c.auth, c.params);
    if (denied) return denied;
    const run = state.check_runs.find((x) => x.repo_id === r.id && x.id === Number(c.params.check_run_id));
    if (!run) return notFound();
    // A run belongs to the App that made it.
    if (run.app !== app.slug) return [403, { message: "Invalid app_id `" + app.id + "` - check run can only be modified by the GitHub App that created it.", documentation_url: DOCS, status: "403" }];
    const b = c.body;
    for (const key of ["name", "status", "conclusion", "output", "details_url", "external_id", "started_at", "completed_at"]) {
      if (b[key] !== undefined) run[key] = b[key];
    }
    if (b.conclusion) {
      run.status = "completed";
      run.completed_at = b.completed_at ?? now();
    }
    run.history.push({ status: run.status, conclusion: run.conclusion, at: now() });
    return [200, checkRunJson(ex(c.entry, 200), run, r)];
  },
};

function blobSha(text) {
  const bytes = Buffer.from(text);
  return crypto.createHash("sha1").update(`blob ${bytes.length}\0`).update(bytes).digest("hex");
}

// ---------------------------------------------------------------------------------------------
// Control API (tests only; never validated, no auth). Throwing `Refused` answers 400.

class Refused extends Error {}
function need(body, ...names) {
  const missing = names.filter((n) => body?.[n] === undefined || body?.[n] === null);
  if (missing.length) throw new Refused(`missing ${missing.join(", ")}`);
}
function controlRepo(body) {
  need(body, "owner", "repo");
  const r = repoOf(body.owner, body.repo);
  if (!r) throw new Refused(`no repository ${body.owner}/${body.repo}: POST /_standin/repos first`);
  return r;
}

function snapshot() {
  return {
    app: { app_id: app.id, slug: app.slug, bot_login: botLogin },
    config: { ...config, pats: config.pats.map((p) => ({ login: p.login })), webhook_secret: config.webhook_secret ? "***" : null },
    repos: state.repos,
    files: state.files,
    permissions: state.permissions,
    pulls: state.pulls,
    comments: state.comments,
    reactions: state.reactions,
    deployments: state.deployments,
    check_runs: state.check_runs,
    statuses: state.statuses,
    deliveries: state.deliveries.map((d) => ({ ...deliveryJson(d), url: d.url, error: d.error ?? null })),
    tokens_issued: state.tokens_issued,
    tokens: Object.values(state.tokens).map((t) => ({ installation_id: t.installation_id, expires_at: t.expires_at, repository_ids: t.repository_ids })),
    rate_limits: Object.fromEntries([...budgets].map(([key, b]) => [key.startsWith("ghs_") ? `installation-token-${state.tokens[key]?.installation_id}` : key, b])),
  };
}

async function control(method, parts, body) {
  const route = `${method} /${parts[0] ?? ""}`;
  switch (route) {
    case "GET /app":
      return [200, { app_id: app.id, slug: app.slug, name: app.name, bot_login: botLogin, private_key_pem: app.privateKeyPem, public_key_pem: app.publicKeyPem, description_version: specVersion }];
    case "GET /config":
      return [200, config];
    case "PUT /config": {
      const known = Object.keys(config);
      const unknown = Object.keys(body).filter((k) => !known.includes(k));
      if (unknown.length) throw new Refused(`unknown settings ${unknown.join(", ")}; known: ${known.join(", ")}`);
      Object.assign(config, body);
      return [200, config];
    }
    case "POST /reset":
      reset();
      return [200, {}];
    case "POST /repos": {
      need(body, "id", "owner", "name");
      const r = { id: body.id, owner: body.owner, name: body.name, installation_id: body.installation_id ?? null, private: !!body.private, default_branch: body.default_branch ?? "main" };
      state.repos = state.repos.filter((x) => x.id !== r.id && !(same(x.owner, r.owner) && same(x.name, r.name))).concat([r]);
      return [201, r];
    }
    case "PUT /files": {
      const r = controlRepo(body);
      need(body, "ref", "path");
      const key = `${fullName(r)}@${body.ref}`.toLowerCase();
      state.files[key] ??= {};
      if (body.content == null) delete state.files[key][body.path];
      else state.files[key][body.path] = body.content;
      return [200, {}];
    }
    case "PUT /permissions": {
      const r = controlRepo(body);
      need(body, "login");
      const key = fullName(r).toLowerCase();
      state.permissions[key] ??= {};
      const allowed = ["admin", "maintain", "write", "triage", "read", "none", "not-a-user"];
      if (body.permission === null) delete state.permissions[key][body.login.toLowerCase()];
      else if (!allowed.includes(body.permission)) throw new Refused(`permission must be one of ${allowed.join(", ")} or null`);
      else state.permissions[key][body.login.toLowerCase()] = body.permission;
      return [200, {}];
    }
    case "PUT /org_members": {
      need(body, "org", "logins");
      state.org_members[body.org.toLowerCase()] = body.logins.map((l) => l.toLowerCase());
      return [200, {}];
    }
    case "PUT /team_members": {
      need(body, "org", "team", "logins");
      state.team_members[`${body.org}/${body.team}`.toLowerCase()] = body.logins.map((l) => l.toLowerCase());
      return [200, {}];
    }
    case "POST /pulls": {
      const r = controlRepo(body);
      need(body, "number", "head_sha");
      const t = now();
      const p = {
        id: id(), state: "open", merged: false, merged_at: null, closed_at: null, draft: false, labels: [], fork: false,
        head_ref: `feature-${body.number}`, base_ref: r.default_branch, base_sha: "0".repeat(40), user: "dev",
        title: `Pull request ${body.number}`, body: null, created_at: t, updated_at: t, ...body, owner: r.owner, repo: r.name,
      };
      state.pulls = state.pulls.filter((x) => !(same(x.owner, p.owner) && same(x.repo, p.repo) && x.number === p.number)).concat([p]);
      return [201, pullJson({}, p, true)];
    }
    case "PATCH /pulls": {
      const [owner, repo, number] = parts.slice(1);
      const p = state.pulls.find((x) => same(x.owner, owner) && same(x.repo, repo) && x.number === Number(number));
      if (!p) return [404, { message: `no pull request ${owner}/${repo}#${number}` }];
      const t = now();
      Object.assign(p, body, { updated_at: t });
      if (body.merged) {
        Object.assign(p, { state: "closed", merged_at: p.merged_at ?? t, merge_commit_sha: crypto.createHash("sha1").update(`merge ${p.id}`).digest("hex") });
      }
      if (p.state === "closed") p.closed_at ??= t;
      else p.closed_at = null;
      return [200, pullJson({}, p, true)];
    }
    case "POST /comments": {
      const r = controlRepo(body);
      need(body, "issue_number", "user", "body");
      const t = now();
      const comment = { id: id(), repo_id: r.id, owner: r.owner, repo: r.name, issue_number: body.issue_number, body: body.body, user: body.user, app: false, created_at: t, updated_at: t, edits: 0, history: [] };
      state.comments.push(comment);
      return [201, commentJson({}, comment)];
    }
    case "POST /check-runs": {
      const r = controlRepo(body);
      need(body, "head_sha", "name");
      const t = now();
      const status = body.status ?? (body.conclusion ? "completed" : "in_progress");
      const run = {
        id: id(), repo_id: r.id, name: body.name, head_sha: body.head_sha, status, conclusion: body.conclusion ?? null,
        output: body.output, details_url: body.details_url ?? null, app: body.app_slug ?? ciApp.slug, started_at: t,
        completed_at: status === "completed" ? t : null, check_suite_id: 6000 + r.id, history: [{ status, conclusion: body.conclusion ?? null, at: t }],
      };
      state.check_runs.push(run);
      return [201, run];
    }
    case "POST /statuses": {
      const r = controlRepo(body);
      need(body, "sha", "context", "state");
      const s = { id: id(), repo_id: r.id, sha: body.sha, context: body.context, state: body.state, description: body.description ?? null, target_url: body.target_url ?? null, creator: body.creator ?? "ci-bot", created_at: now() };
      state.statuses.push(s);
      return [201, s];
    }
    case "POST /deliver": {
      need(body, "event", "payload");
      if (!config.webhook_url) throw new Refused("PUT /_standin/config with webhook_url first");
      const record = await deliver(body);
      return [200, { id: record.id, guid: record.guid, status_code: record.status_code, status: record.status, duration: record.duration }];
    }
    case "POST /faults": {
      need(body, "status");
      faults.push({
        method: body.method ? body.method.toUpperCase() : null,
        path_regex: body.path_regex ? new RegExp(body.path_regex) : null,
        status: body.status,
        count: body.count ?? 1,
        retry_after_seconds: body.retry_after_seconds ?? null,
        rate_limited: !!body.rate_limited,
        hits: 0,
      });
      return [201, {}];
    }
    case "GET /faults":
      return [200, faults.map((f) => ({ ...f, path_regex: f.path_regex?.source ?? null }))];
    case "DELETE /faults":
      faults = [];
      return [200, {}];
    case "GET /state":
      return [200, snapshot()];
    case "GET /requests":
      return [200, requests];
    case "GET /violations":
      return [200, violations];
    default:
      return [404, { message: `no control route ${route}; see e2e/github-standin/README.md` }];
  }
}

// ---------------------------------------------------------------------------------------------
// The API: log, match the operation, check the request, faults, authentication, rate limit,
// then the handler.

function requestId() {
  const hex = (n) => crypto.randomBytes(n).toString("hex").toUpperCase();
  return `${hex(2)}:${hex(2)}:${hex(3)}:${hex(3)}:${hex(4)}`;
}

function send(res, status, body, headers = {}) {
  const text = body === null || body === undefined || status === 304 || status === 204 ? "" : JSON.stringify(body);
  res.writeHead(status, {
    "content-type": "application/json; charset=utf-8",
    "x-github-request-id": requestId(),
    "x-github-media-type": "github.v3; format=json",
    "x-github-api-version-selected": "2022-11-28",
    ...headers,
  });
  res.end(text);
}

function validationFailed(errors) {
  return { message: "Validation Failed", errors: errors.map((e) => ({ resource: "Request", ...e })), documentation_url: DOCS, status: "422" };
}

async function api(req, res, url, raw) {
  const started = performance.now();
  const path = url.pathname;
  const auth = authenticate(req);
  const log = {
    id: requests.length + 1,
    method: req.method,
    path,
    query: Object.fromEntries(url.searchParams),
    auth: auth.kind,
    installation_id: auth.installation_id ?? null,
    if_none_match: req.headers["if-none-match"] !== undefined,
    at: Date.now(),
  };
  if (auth.error) log.auth_error = auth.error;
  requests.push(log);
  const budget = budgetOf(auth);
  let entry = null;
  const finish = (status, body, headers = {}) => {
    if (status !== 304) budget.used += 1;
    log.status = status;
    log.ms = Math.round((performance.now() - started) * 10) / 10;
    if (config.check_responses && entry && !log.violation && !log.fault) {
      const problems = checkResponse(entry, status, body);
      if (problems.length) violations.push({ kind: "response", method: req.method, path, operation: entry.op.operationId, status, reason: problems.map((p) => p.message).join("; "), errors: problems });
    }
    send(res, status, body, { ...rateHeaders(auth, budget), ...headers });
  };

  const found = findOperation(req.method, path);
  if (!found.entry) {
    const reason = found.pathExists ? `${req.method} is not documented for ${path}` : `no operation of GitHub's REST API has the path ${path}`;
    const errors = [{ field: "path", code: "invalid", message: reason }];
    violations.push({ kind: "request", method: req.method, path, operation: null, reason, errors });
    log.violation = true;
    return finish(422, validationFailed(errors));
  }
  entry = found.entry;
  log.operation = entry.op.operationId;
  const { problems, body } = checkRequest(entry, found.params, url.searchParams, raw, req.headers["content-type"]);
  if (problems.length) {
    violations.push({ kind: "request", method: req.method, path, operation: entry.op.operationId, reason: problems.map((p) => p.message).join("; "), errors: problems });
    log.violation = true;
    return finish(422, validationFailed(problems));
  }

  const fault = faults.find((f) => f.count > 0 && (!f.method || f.method === req.method) && (!f.path_regex || f.path_regex.test(path)));
  if (fault) {
    fault.count -= 1;
    fault.hits += 1;
    log.fault = true;
    // A fault is an answer, not a state: the token's budget is left as it was.
    if (fault.rate_limited) {
      const limit = String(config.rate_limit);
      return finish(fault.status ?? 403, { message: rateLimitMessage(auth), documentation_url: "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api", status: String(fault.status ?? 403) }, {
        "x-ratelimit-remaining": "0",
        "x-ratelimit-used": limit,
        "x-ratelimit-limit": limit,
        "x-ratelimit-reset": String(Math.floor(Date.now() / 1000) + (fault.retry_after_seconds ?? 60)),
      });
    }
    const headers = fault.retry_after_seconds != null ? { "retry-after": String(fault.retry_after_seconds) } : {};
    const message =
      fault.status === 403 || fault.status === 429
        ? "You have exceeded a secondary rate limit. Please wait a few minutes before you try again. If you reach out to GitHub Support for help, please include the request ID."
        : fault.status >= 500
          ? "Server Error"
          : "Fault injected by the GitHub stand-in";
    return finish(fault.status, { message, documentation_url: "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api", status: String(fault.status) }, headers);
  }

  if (auth.error) {
    const message = auth.jwt ? auth.error : "Bad credentials";
    return finish(401, { message, documentation_url: DOCS, status: "401" });
  }
  const limit = auth.kind === "none" ? 60 : config.rate_limit;
  if (budget.used >= limit) {
    return finish(auth.kind === "none" ? 403 : 403, { message: rateLimitMessage(auth), documentation_url: "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api", status: "403" });
  }
  const handler = handlers[`${req.method} ${entry.template}`];
  if (!handler) {
    const reason = `${req.method} ${entry.template} (${entry.op.operationId}) is GitHub's but the stand-in does not implement it`;
    violations.push({ kind: "unimplemented", method: req.method, path, operation: entry.op.operationId, reason });
    return finish(501, { message: reason, documentation_url: DOCS, status: "501" });
  }
  const [status, answer, headers] = await handler({ req, auth, params: found.params, query: url.searchParams, body: body ?? {}, entry, path });
  return finish(status, answer, headers);
}

const server = http.createServer(async (req, res) => {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  const raw = Buffer.concat(chunks).toString();
  const url = new URL(req.url, "http://standin");
  try {
    if (url.pathname === "/_standin" || url.pathname.startsWith("/_standin/")) {
      let body = {};
      try {
        body = raw.trim() ? JSON.parse(raw) : {};
      } catch (error) {
        return send(res, 400, { message: `control body is not JSON: ${error.message}` });
      }
      const parts = url.pathname.split("/").filter(Boolean).slice(1);
      const [status, answer] = await control(req.method, parts, body);
      return send(res, status, answer);
    }
    if (url.pathname.startsWith("/login/oauth/")) return oauth(req, res, url, raw);
    await api(req, res, url, raw);
  } catch (error) {
    if (error instanceof Refused) return send(res, 400, { message: error.message });
    violations.push({ kind: "stand-in", method: req.method, path: url.pathname, reason: `stand-in error: ${error.stack}` });
    process.stderr.write(`github-standin: ${req.method} ${req.url}: ${error.stack}\n`);
    if (!res.headersSent) send(res, 500, { message: `stand-in error: ${error.message}` });
  }
});
// Clients keep connections alive; a server closing one just as a request goes out on it makes
// spurious failures, so idle connections are kept longer than any client pool keeps them.
server.keepAliveTimeout = 120_000;
server.headersTimeout = 125_000;

process.on("uncaughtException", (error) => process.stderr.write(`github-standin: uncaught: ${error.stack}\n`));
process.on("unhandledRejection", (error) => process.stderr.write(`github-standin: unhandled: ${error?.stack ?? error}\n`));

const portArg = process.argv.indexOf("--port");
const port = portArg > 0 ? Number(process.argv[portArg + 1]) : 0;
server.listen(port, "127.0.0.1", () => {
  baseUrl = `http://127.0.0.1:${server.address().port}`;
  process.stdout.write(`${baseUrl}\n`);
});
for (const signal of ["SIGINT", "SIGTERM"]) process.on(signal, () => process.exit(0));
// With --exit-with-stdin (the Rust handle passes it) the stand-in ends when its parent's end of
// stdin closes, so a test process that is killed outright leaves no stand-in behind.
if (process.argv.includes("--exit-with-stdin")) {
  process.stdin.on("end", () => process.exit(0));
  process.stdin.on("error", () => process.exit(0));
  process.stdin.resume();
}
