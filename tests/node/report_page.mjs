// Opens a self-contained report page (a file: URL) in Debian's chromium with playwright-core, for
// tests/test_batch_outputs.py. One JSON argument: {page, screenshot, timeoutMs}.
// Every request the page makes is recorded and aborted (the page itself, a file: URL, is the only
// one allowed through), so a reference to anything outside the file shows up as a request and
// never reaches a network. Prints one JSON line:
//   {requests: [urls other than the page], consoleErrors, charts: <svg count>, bars: <rect count>,
//    headings: [h2 texts]}
import { chromium } from 'playwright-core';

const args = JSON.parse(process.argv[2]);
const timeout = args.timeoutMs || 30000;
const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--no-first-run'],
  timeout,
});
const out = { requests: [], consoleErrors: [] };
try {
  const context = await browser.newContext({ viewport: { width: 1100, height: 900 }, javaScriptEnabled: true });
  await context.route('**/*', (route) => (route.request().url() === args.page ? route.fallback() : route.abort()));
  const page = await context.newPage();
  page.setDefaultTimeout(timeout);
  page.on('request', (req) => { if (req.url() !== args.page) out.requests.push(req.url()); });
  page.on('console', (msg) => { if (msg.type() === 'error') out.consoleErrors.push(msg.text()); });
  await page.goto(args.page, { waitUntil: 'load' });
  out.charts = await page.locator('svg').count();
  out.bars = await page.locator('svg rect').count();
  out.headings = await page.locator('h2').allTextContents();
  if (args.screenshot) {
    await page.screenshot({ path: args.screenshot, fullPage: true });
  }
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));
