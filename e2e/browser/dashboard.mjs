// A reviewer's walk through previewd's dashboard in headless Chromium (Debian's package, driven
// by playwright-core; nothing is downloaded), for service/tests/dashboard.rs, which sets up
// previewd, the GitHub stand-in and the pull requests, and reads this script's lines.
//
// Input (environment): BASE (previewd), STANDIN (the GitHub stand-in), CHROMIUM (the browser),
// OUT (the folder for screenshots), PR1 and PR2 (labels like `acme/shop#1`), ENV1 (PR1's
// environment id), BROKEN (the id of an environment that failed pulling its image).
// Protocol: one JSON object per line on stdout: {"step": ...} at each checkpoint; after
// {"step": "watching"} it waits for a line on stdin (the test opens PR2 meanwhile). It ends
// with {"ok": true, "screenshots": [...]} or {"ok": false, "error": "..."} and exit code 1.

import { chromium } from "playwright-core";
import { createRequire } from "node:module";
import { createInterface } from "node:readline";
import path from "node:path";

const require = createRequire(import.meta.url);
const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const [BASE, STANDIN, CHROMIUM, OUT] = ["BASE", "STANDIN", "CHROMIUM", "OUT"].map(env);
const [PR1, PR2, ENV1, BROKEN] = ["PR1", "PR2", "ENV1", "BROKEN"].map(env);
const say = (value) => process.stdout.write(JSON.stringify(value) + "\n");
const lines = createInterface({ input: process.stdin });
const nextLine = () => new Promise((resolve) => lines.once("line", resolve));
const screenshots = [];

function check(condition, message) {
  if (!condition) throw new Error(message);
}

async function shoot(page, name) {
  const file = path.join(OUT, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  screenshots.push(file);
}

// axe-core in the page: no serious or critical violation.
async function accessible(page, what) {
  await page.addScriptTag({ path: require.resolve("axe-core/axe.min.js") });
  const result = await page.evaluate(async () => await window.axe.run(document, { resultTypes: ["violations"] }));
  const bad = result.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  check(!bad.length, `${what}: accessibility violations: ${bad.map((v) => `${v.id} (${v.impact}): ${v.help} at ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`).join("; ")}`);
}

async function signIn(browser, login, viewport) {
  const answer = await fetch(`${STANDIN}/_standin/config`, { method: "PUT", body: JSON.stringify({ oauth_user: login }) });
  check(answer.ok, `the stand-in's config: ${answer.status}`);
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  // previewd sends the browser to GitHub's authorize page, which sends it straight back.
  await page.goto(`${BASE}/`);
  check(new URL(page.url()).pathname === "/", `after signing in the browser is at ${page.url()}`);
  await page.getByText(`Signed in as ${login}`).waitFor();
  return { context, page };
}

const rowOf = (page, label) => page.locator("#fleet tbody tr", { has: page.locator("a.pr", { hasText: label }) });

async function main() {
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true });
  try {
    const desktop = { width: 1280, height: 800 };
    const phone = { width: 390, height: 844 };
    const { context, page } = await signIn(browser, "writer", desktop);
    await rowOf(page, PR1).waitFor();
    check((await page.locator("#fleet").innerText()).includes("secret-project") === false, "another repository's environment is shown");
    await accessible(page, "the environments page");
    await shoot(page, "environments-desktop");

    // Live: the stream is open; a pull request opened now appears and turns Ready, no reload.
    await page.waitForFunction(() => document.documentElement.dataset.live === "open", null, { timeout: 30_000 });
    await page.evaluate(() => { window.notReloaded = true; });
    say({ step: "watching" });
    await nextLine();
    const row = rowOf(page, PR2);
    await row.locator(".state", { hasText: "Ready" }).waitFor({ timeout: 120_000 });
    check(await page.evaluate(() => window.notReloaded === true), "the page was reloaded");
    await shoot(page, "environments-live-desktop");
    say({ step: "live" });

    // One environment: its history and objects, then extend it.
    await page.locator("a.pr", { hasText: PR1 }).click();
    await page.waitForURL(`${BASE}/environments/${ENV1}`);
    await page.getByRole("heading", { name: "History" }).waitFor();
    await accessible(page, "the environment page");
    await shoot(page, "environment-desktop");
    await page.getByLabel("Extend by").fill("3h");
    await page.getByRole("button", { name: "Extend" }).click();
    await page.getByRole("status").filter({ hasText: "Extended." }).waitFor();
    say({ step: "extended" });

    // Destroying asks for the confirmation first (the browser refuses the unticked form).
    await page.getByRole("button", { name: "Destroy" }).click();
    check(page.url().endsWith("?done=extend"), `an unconfirmed destroy was sent: ${page.url()}`);
    await page.getByLabel(/Yes, tear down/).check();
    await page.getByRole("button", { name: "Destroy" }).click();
    await page.getByRole("status").filter({ hasText: "The teardown is under way." }).waitFor();
    say({ step: "destroyed" });

    // A failed environment's page says why and what to do.
    await page.goto(`${BASE}/environments/${BROKEN}`);
    const failure = page.locator("section", { has: page.getByRole("heading", { name: "Why it failed" }) });
    await failure.getByText("image_pull").waitFor();
    await failure.getByText(/check that CI pushed the image/).waitFor();
    await accessible(page, "a failed environment's page");
    await shoot(page, "failure-desktop");

    // The platform page (the writer is one of dashboard.admins here): limits, usage, failures.
    await page.getByRole("link", { name: "Platform" }).click();
    await page.waitForURL(`${BASE}/platform`);
    await page.getByRole("heading", { name: "Failures of the last day" }).waitFor();
    await page.getByRole("cell", { name: "image_pull" }).waitFor();
    await accessible(page, "the platform page");
    await shoot(page, "platform-desktop");
    say({ step: "platform" });

    // The same pages at a phone's width.
    const small = await browser.newContext({ viewport: phone, storageState: await context.storageState() });
    const p = await small.newPage();
    for (const [name, url] of [["environments-phone", "/"], ["environment-phone", `/environments/${ENV1}`], ["failure-phone", `/environments/${BROKEN}`], ["platform-phone", "/platform"]]) {
      await p.goto(`${BASE}${url}`);
      await accessible(p, `${url} at a phone's width`);
      await shoot(p, name);
    }

    // A reader sees the environment without buttons, and a destroy they send is refused.
    const reader = await signIn(browser, "reader", desktop);
    await reader.page.goto(`${BASE}/environments/${BROKEN}`);
    await reader.page.getByRole("heading", { name: "History" }).waitFor();
    check((await reader.page.getByRole("button", { name: "Destroy" }).count()) === 0, "a reader is shown the buttons");
    const csrf = await reader.page.locator("input[name=csrf]").first().inputValue();
    const refused = await reader.page.request.post(`${BASE}/environments/${BROKEN}/destroy`, { form: { csrf, confirm: "yes" }, maxRedirects: 0 });
    check(refused.status() === 403, `a reader's destroy: ${refused.status()}`);
    check((await refused.text()).includes("needs write access"), "the refusal says why");
    say({ step: "refused" });
    say({ ok: true, screenshots });
  } finally {
    await browser.close();
  }
}

main().then(
  () => process.exit(0),
  (error) => {
    say({ ok: false, error: String(error?.stack ?? error), screenshots });
    process.exit(1);
  },
);
