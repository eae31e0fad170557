// The web page in a real browser: Debian's Chromium, driven by puppeteer-core (run by
// tests/integration/test_node_clients.py). Environment: BRT_PAGE_URL (http://127.0.0.1:PORT/),
// BRT_EXPECT (JSON from gRPC: {"text": ..., "tokens": N, "bits_per_token": x}), BRT_SCREENSHOT (a .png path).
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import puppeteer from "puppeteer-core";

const expect = JSON.parse(readFileSync(process.env.BRT_EXPECT, "utf8"));

test("the page scores a text and shows its tokens and bits per token", async () => {
  const browser = await puppeteer.launch({
    executablePath: process.env.BRT_CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           `--user-data-dir=${mkdtempSync(join(tmpdir(), "brt-chromium-"))}`],
  });
  try {
    const page = await browser.newPage();
    await page.setViewport({ width: 1200, height: 1000 });
    const failed = [];
    page.on("requestfailed", (r) => failed.push(r.url()));
    await page.goto(process.env.BRT_PAGE_URL, { waitUntil: "load" });
    await page.$eval("#text", (el, text) => { el.value = text; }, expect.text);
    await page.click("#score");
    await page.waitForSelector("#summary[data-done]", { timeout: 120000 });
    const tokens = Number(await page.$eval("#summary [data-tokens]", (el) => el.dataset.tokens));
    const bpt = Number(await page.$eval("#summary [data-bpt]", (el) => el.dataset.bpt));
    const spans = await page.$$eval("#tokens span", (els) => els.length);
    assert.equal(tokens, expect.tokens);
    assert.equal(spans, expect.tokens);
    assert.ok(Math.abs(bpt - expect.bits_per_token) < 1e-3, `${bpt} vs ${expect.bits_per_token}`);
    assert.deepEqual(failed, []);
    await page.screenshot({ path: process.env.BRT_SCREENSHOT, fullPage: true });
  } finally {
    await browser.close();
  }
});
