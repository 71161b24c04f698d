// Drives `ccfan dashboard` in headless Chromium (puppeteer-core, the system's Chromium) for the integration test
// `dashboard::the_dashboard_shows_a_run_live_and_a_rework_click_starts_the_next_attempt`.
// Usage: node dashboard.js URL GO_FILE OUT_DIR [SCREENSHOT_DIR]
// It checks the page updates without a reload while a run goes on, reworks a blocked task through the page, and
// writes every page it saw, and every event of the page's feed (tapped from inside the page, with its session),
// to OUT_DIR for the test to search for raw secrets.
"use strict";
const fs = require("fs");
const path = require("path");
const puppeteer = require("puppeteer-core");

const [url, goFile, outDir, shots] = process.argv.slice(2);
const chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].find((p) => fs.existsSync(p));
const step = (what) => process.stderr.write(`step: ${what}\n`);
let pages = 0;
let current = null;

async function dump(page, name) {
  fs.writeFileSync(path.join(outDir, `${++pages}-${name}.html`), await page.content());
}

async function state(page, task, wanted, timeout = 60000) {
  await page.waitForFunction(
    (id, states) => {
      const row = document.getElementById("task-" + id);
      return row && states.includes(row.dataset.state);
    },
    { timeout, polling: 50 }, task, wanted);
}

(async () => {
  const browser = await puppeteer.launch({
    executablePath: chromium,
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"],
  });
  const page = await browser.newPage();
  current = page;
  const problems = [];
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  page.on("console", (message) => {
    if (message.type() === "error" && !message.text().includes("409")) problems.push(`console: ${message.text()}`);
  });
  await page.setViewport({ width: 1400, height: 900 });

  step("the page loads and shows the run in progress");
  await page.goto(url);
  await page.waitForSelector("tr.task");
  if ((await page.evaluate(() => location.href)).includes("token")) throw new Error("the token stayed in the address bar");
  // A second reader of the feed, inside the page (same origin, same session), keeps every event for the test.
  await page.evaluate(() => {
    window.tapped = "";
    const session = localStorage.getItem("ccfan-dashboard-session");
    fetch("/api/events", { headers: { authorization: "Bearer " + session } }).then(async (response) => {
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        window.tapped += value;
      }
    });
  });
  await state(page, "slow", ["running"]);
  await page.evaluate(() => { window.loadedOnce = true; });
  // A running worker's log, read while it is written (it printed a private key longer than the tail shown).
  await page.$eval("#task-slow", (row) => row.click());
  await page.waitForFunction(() => {
    const body = document.getElementById("detail-body");
    const shows = document.getElementById("detail").dataset.shows || "";
    return shows.endsWith("/slow") && body && body.textContent.includes("worker log");
  }, { timeout: 30000, polling: 50 });
  await page.$$eval("#detail-body details", (all) => all.forEach((d) => { d.open = true; }));
  await dump(page, "running");
  if (shots) await page.screenshot({ path: path.join(shots, "dashboard.png") });

  step("a task that finishes shows up without a reload");
  fs.writeFileSync(goFile, "go");
  // It printed a key, so the gate holds it: blocked (the policy allows no rework).
  await state(page, "slow", ["blocked", "rolled_back"]);
  await page.waitForSelector('button.run[data-run-state="finished"]', { timeout: 60000 });
  if (!(await page.evaluate(() => window.loadedOnce === true))) throw new Error("the page reloaded");

  step("the blocked task is reworked from the page");
  await state(page, "fix", ["blocked"]);
  await page.$eval("#task-fix", (row) => row.click());
  await page.waitForSelector('#detail[data-shows$="/fix"] button[data-action="rework"]');
  await page.$eval('#detail[data-shows$="/fix"] button[data-action="rework"]', (button) => button.click());
  await page.waitForSelector("#ask-input:not([hidden])");
  await page.type("#ask-input", "Keep to src/: put the greeting in src/fix.txt and leave README.md alone.");
  await page.$eval("#ask-yes", (button) => button.click());
  await page.waitForFunction(() => document.getElementById("task-fix").dataset.attempt === "2", { timeout: 60000, polling: 50 });
  await state(page, "fix", ["accepted"]);
  if (!(await page.evaluate(() => window.loadedOnce === true))) throw new Error("the page reloaded");
  await dump(page, "reworked");

  step("the leaked key's task shows its diff, redacted");
  await page.$eval("#task-leak", (row) => row.click());
  await page.waitForFunction(() => {
    const body = document.getElementById("detail-body");
    const shows = document.getElementById("detail").dataset.shows || "";
    return shows.endsWith("/leak") && body && body.textContent.includes("src/k.txt") && body.textContent.includes("worker log");
  }, { timeout: 30000, polling: 50 });
  // The log is folded: open it, so the page holds what a person would read.
  await page.$$eval("#detail-body details", (all) => all.forEach((d) => { d.open = true; }));
  await dump(page, "leak-detail");
  if (shots) await page.screenshot({ path: path.join(shots, "dashboard-task.png") });

  step("the scorecard tab");
  await page.$eval("#tab-score", (button) => button.click());
  await page.waitForSelector("#score table");
  await dump(page, "scorecard");
  fs.writeFileSync(path.join(outDir, "events.txt"), await page.evaluate(() => window.tapped));
  if (problems.length) throw new Error(problems.join("\n"));
  await browser.close();
  step("done");
})().catch(async (error) => {
  console.error(error && error.stack || String(error));
  if (current) {
    const text = await current.evaluate(() => document.body.innerText).catch(() => "(no page)");
    console.error("the page said:\n" + text.slice(0, 4000));
  }
  process.exit(1);
});
