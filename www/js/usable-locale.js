// Some browsers report a language that Intl rejects: "C" where the system's locale is POSIX's
// (LANG=C), or "en_US". `new Intl.NumberFormat(navigator.language)` then throws, and uPlot calls
// it as its module loads, so the charts, and with them the page, would not start. Imported
// ahead of uPlot, this module makes such a navigator.language read as the locale Intl picks
// when given none; a language Intl accepts is left alone.

/** Whether Intl accepts `tag` as a locale. */
function isUsableLocale(tag) {
  try {
    return Intl.getCanonicalLocales(tag).length === 1;
  } catch {
    return false;
  }
}

if (typeof navigator !== 'undefined' && !isUsableLocale(navigator.language)) {
  const fallback = new Intl.NumberFormat().resolvedOptions().locale;
  Object.defineProperty(navigator, 'language', { configurable: true, get: () => fallback });
}
