// The browser side of scripts/bench-dashboard.sh: loads the dashboard of a run of N tasks in headless Chromium
// (puppeteer-core) and reports, from the page's own clock, (1) first page load: navigation start to every task's
// row drawn, and (2) freshness: for each state change the page showed, the time from when ccfan stored it
// (the transition's timestamp) to when the page drew it.
// Usage: NODE_PATH=.tools/npm/node_modules node scripts/bench-dashboard.js URL TASKS GO_FILE LOADS
"use strict";
const fs = require("fs");
const puppeteer = require("puppeteer-core");

const [url, tasks, goFile, loads] = process.argv.slice(2);
const chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].find((p) => fs.existsSync(p));
const pct = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))];

(async () => {
  const browser = await puppeteer.launch({ executablePath: chromium, headless: true, args: ["--no-sandbox", "--disable-gpu"] });
  const page = await browser.newPage();
  await page.setViewport({ width: 1400, height: 900 });
  await page.goto(url); // signs in (the token for the cookie), then the page
  const base = url.replace(/#token=.*/, "");
  const drawn = () => page.waitForFunction((n) => document.querySelectorAll("tr.task").length === n && window.ccfanStats.snapshotAt,
    { timeout: 60000, polling: 20 }, Number(tasks));
  await drawn();
  const times = [];
  for (let i = 0; i < Number(loads); i++) {
    await page.goto(base);
    await drawn();
    times.push(await page.evaluate(() => window.ccfanStats.snapshotAt));
  }
  times.sort((a, b) => a - b);
  fs.writeFileSync(goFile, "go");
  await page.waitForSelector('button.run[data-run-state="finished"]', { timeout: 900000 });
  const latencies = (await page.evaluate(() => window.ccfanStats.latencies)).sort((a, b) => a - b);
  console.log(JSON.stringify({
    load_ms: { p50: Math.round(pct(times, 0.5)), max: Math.round(times[times.length - 1]), n: times.length },
    change_ms: { p50: pct(latencies, 0.5), p90: pct(latencies, 0.9), max: latencies[latencies.length - 1], n: latencies.length },
  }));
  await browser.close();
})().catch((error) => { console.error(error); process.exit(1); });
