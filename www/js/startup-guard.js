// Until the page has started (app.js sets body[data-ready]), any failure is shown in place of
// "Loading the engine…", with what failed and what to do, instead of leaving that line there
// for good: a module of the page that does not load (a file missing, a network error) or does
// not run (a syntax error, an exception as it loads, a language the browser's Intl rejects…),
// or a promise rejected with nobody to handle it. A classic script, run before the page's
// modules, so that it is listening whatever they do; the page's Content-Security-Policy allows
// no inline script.
(() => {
  const status = document.querySelector('#engine-status');
  const started = () => document.body.dataset.ready === 'true';
  const pagePath = (url) => {
    try {
      const parsed = new URL(url, location.href);
      return parsed.origin === location.origin ? parsed.pathname.replace(/^\//, '') : parsed.href;
    } catch {
      return String(url);
    }
  };

  function show(message) {
    // The first failure is the one to fix; those after it are usually its consequences.
    if (started() || document.body.dataset.startFailed === 'true') return;
    document.body.dataset.startFailed = 'true';
    status.textContent = `The page could not start: ${message}`;
    status.classList.add('error');
    status.setAttribute('role', 'alert');
  }

  // A module that does not arrive fails its whole graph, and the browser only tells the page's
  // <script> element; the file at fault is found among the responses that were errors, where
  // the browser reports their status.
  function moduleDidNotLoad(script) {
    const failed = performance.getEntriesByType('resource')
      .filter((entry) => entry.initiatorType === 'script' || entry.initiatorType === 'other')
      .filter((entry) => entry.responseStatus >= 400)
      .map((entry) => `${pagePath(entry.name)} (HTTP ${entry.responseStatus})`);
    const what = failed.length ? failed.join(', ') : `${pagePath(script.src)} or a module it imports`;
    show(`${what} did not load. Check the connection and reload the page; if this comes back, the site is missing some of its files.`);
  }

  addEventListener('error', (event) => {
    if (event.target instanceof HTMLScriptElement) {
      moduleDidNotLoad(event.target);
    } else if (event.target === window) {
      const where = event.filename ? ` in ${pagePath(event.filename)}` : '';
      show(`${event.message || event.error || 'an error'}${where}. Reload the page; if this comes back, try an up-to-date ` +
        'Chrome, Edge, Firefox or Safari.');
    }
    // Other elements' errors (an image, a preload) are not the page failing to start.
  }, true);

  addEventListener('unhandledrejection', (event) => {
    const reason = event.reason?.message ?? String(event.reason);
    show(`${reason}. Reload the page; if this comes back, try an up-to-date Chrome, Edge, Firefox or Safari.`);
  });
})();
