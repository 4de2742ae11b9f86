// Drives the real CDS Hooks Sandbox (a static build served on 127.0.0.1) in Debian's chromium with
// playwright-core, for tests/test_sandbox_browser.py. One JSON argument:
//   {sandboxUrl, fhirServer, patientId, encounterId, discoveryUrl, serviceUrl, coding, screenshot,
//    timeoutMs}
// Prints one JSON line: {services, cardSummaries, suggestion, orderSignRequest, feedback}.
//
// Where the sandbox's own UI cannot do what the test needs (see its README), the script uses the
// sandbox's own state and actions, and says so here:
//  * its PAMA (imaging order) view picks studies from a list of CT/MR codes without 76000, and has
//    no Sign button: the script dispatches the app's own Redux actions on its store (found on the
//    React tree): UPDATED_STUDY with a CPT 76000 coding (what picking a study dispatches), then
//    TRIGGER_ORDER_SIGN (what the sandbox's sign trigger 'pama/order-sign' listens for);
//  * it never sends context.encounterId: a browser route adds it to the outgoing order-sign call
//    (the request is otherwise the sandbox's own, prefetch and JWT included).
// Everything else is the sandbox's UI: the service list in "Configure CDS Services", the card as
// rendered, the suggestion button clicked, and the feedback the sandbox posts for it.
import { chromium } from 'playwright-core';

const args = JSON.parse(process.argv[2]);
const timeout = args.timeoutMs || 30000;

function local(url) {
  const host = new URL(url).hostname;
  return host === '127.0.0.1' || host === 'localhost';
}

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--no-first-run'],
  timeout,
});
const out = {};
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  // Offline: the sandbox also calls its public default discovery URL; nothing leaves 127.0.0.1.
  await context.route('**/*', (route) => (local(route.request().url()) ? route.fallback() : route.abort()));
  // The sandbox never sends encounterId: add it to the order-sign call to our service.
  await context.route(args.serviceUrl, async (route) => {
    const req = route.request();
    if (req.method() !== 'POST') {
      return route.fallback();
    }
    const body = JSON.parse(req.postData());
    body.context.encounterId = args.encounterId;
    out.orderSignRequest = body;
    return route.fallback({ postData: JSON.stringify(body) });
  });
  const page = await context.newPage();
  page.setDefaultTimeout(timeout);
  const query = new URLSearchParams({
    fhirServiceUrl: args.fhirServer,
    patientId: args.patientId,
    serviceDiscoveryURL: args.discoveryUrl,
    hook: 'order-sign', // the hook the sandbox names in its calls (state.hookState.currentHook)
    screen: 'pama',
  });
  await page.goto(`${args.sandboxUrl}/?${query}`);

  // The service list: the sandbox's "Configure CDS Services" dialog (gear menu).
  const configure = page.locator('li:has-text("Configure CDS Services")');
  await page.waitForFunction(() => document.querySelector('#root')?.innerText.includes('PAMA'));
  const gear = page.locator('header button').last();
  await gear.click();
  await configure.click();
  await page.getByText(args.serviceUrl, { exact: true }).first().waitFor();
  out.services = await page.evaluate(() => [...document.querySelectorAll('[role="dialog"] p, [role="dialog"] span')]
    .map((e) => e.innerText).filter((t) => t.includes('/cds-services/')));
  await page.keyboard.press('Escape');
  await page.locator('[role="dialog"]').waitFor({ state: 'detached' });

  // The sandbox's own Redux store, from the React tree under #root.
  const found = await page.evaluate(() => {
    const root = document.getElementById('root');
    const key = Object.keys(root).find((k) => k.startsWith('__reactContainer$'));
    const stack = [root[key]];
    while (stack.length) {
      const fiber = stack.pop();
      if (fiber) {
        const store = fiber.memoizedProps && fiber.memoizedProps.store;
        if (store && typeof store.dispatch === 'function') {
          window.sandboxStore = store;
          return true;
        }
        stack.push(fiber.sibling, fiber.child);
      }
    }
    return false;
  });
  if (!found) {
    throw new Error('the sandbox Redux store was not found on the React tree');
  }
  const answer = page.waitForResponse((r) => r.url() === args.serviceUrl && r.request().method() === 'POST');
  await page.evaluate((coding) => {
    window.sandboxStore.dispatch({ type: 'UPDATED_STUDY', coding }); // what picking a study does
    window.sandboxStore.dispatch({ type: 'TRIGGER_ORDER_SIGN' }); // what signing does
  }, args.coding);
  const answered = await answer;
  out.orderSignStatus = answered.status();
  if (out.orderSignStatus !== 200) {
    throw new Error(`order-sign answered ${out.orderSignStatus}: ${await answered.text()}`);
  }

  // The card as the sandbox renders it; then its suggestion button.
  const card = page.locator('.MuiCard-root', { hasText: 'fluoro-cds' }).first();
  await card.waitFor();
  out.cardSummaries = await page.locator('.MuiCard-root').allInnerTexts();
  await page.screenshot({ path: args.screenshot, fullPage: false });
  const button = card.locator('button').first();
  out.suggestion = await button.innerText();
  const feedback = page.waitForResponse((r) => r.url() === `${args.serviceUrl}/feedback`
    && r.request().method() === 'POST');
  await button.click();
  const fb = await feedback;
  out.feedback = { status: fb.status(), body: JSON.parse(fb.request().postData()) };
} catch (err) {
  out.error = String(err && err.stack ? err.stack : err);
} finally {
  await browser.close();
}
process.stdout.write(`${JSON.stringify(out)}\n`);
process.exitCode = out.error ? 1 : 0;
