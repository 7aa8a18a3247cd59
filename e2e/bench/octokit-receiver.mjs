// The comparison point of the intake benchmark (e2e/bench/intake.sh): a minimal GitHub webhook
// receiver built the way most GitHub Apps receive webhooks, with `@octokit/webhooks`
// (`Webhooks` + `createNodeMiddleware` on `node:http`, as in the library's README). It verifies
// `X-Hub-Signature-256` and parses the JSON payload for every delivery, like previewd, but stores
// nothing.
//
//   node e2e/bench/octokit-receiver.mjs <port>     (or OCTOKIT_RECEIVER_PORT=<port>)
//   the secret comes from BENCH_WEBHOOK_SECRET
//
//   POST /webhooks/github   the webhook endpoint; the middleware answers `200 ok` once the
//                           handlers ran, 400 on a bad signature
//   GET  /stats             {"received": n, "pull_requests": n}: deliveries that reached a handler
//
// The library answers 200, not 202: its answer is kept as it is.
import { createServer } from "node:http";
import { Webhooks, createNodeMiddleware } from "@octokit/webhooks";

const port = Number(process.argv[2] ?? process.env.OCTOKIT_RECEIVER_PORT);
const secret = process.env.BENCH_WEBHOOK_SECRET;
if (!Number.isInteger(port) || port <= 0 || !secret) {
  console.error("usage: BENCH_WEBHOOK_SECRET=... node octokit-receiver.mjs <port>");
  process.exit(2);
}

const webhooks = new Webhooks({ secret });
let received = 0;
let pullRequests = 0;
webhooks.onAny(() => {
  received += 1;
});
// A handler that reads the parsed payload, as an app would.
webhooks.on("pull_request", ({ payload }) => {
  if (typeof payload.pull_request.number === "number") pullRequests += 1;
});

const middleware = createNodeMiddleware(webhooks, { path: "/webhooks/github" });
const server = createServer(async (request, response) => {
  if (await middleware(request, response)) return;
  if (request.method === "GET" && request.url === "/stats") {
    const body = JSON.stringify({ received, pull_requests: pullRequests });
    response.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
    response.end(body);
    return;
  }
  response.writeHead(404, { "content-length": "0" }).end();
});
// Keep-alive connections from the load generator stay open between requests.
server.keepAliveTimeout = 60_000;
server.listen(port, "127.0.0.1", () => {
  console.error(`octokit-receiver: listening on 127.0.0.1:${port}`);
});
for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => {
    server.close();
    server.closeAllConnections();
    process.exit(0);
  });
}
