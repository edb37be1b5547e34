// Trace review keys (loaded on the trace page only): a approve, r reject, j/n next, k/p previous,
// e edit, c comment. After an htmx decision the server sends "traceDecided" with the next URL.
(() => {
  const typing = (el) => el && (el.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(el.tagName));
  const click = (selector) => {
    const el = document.querySelector(selector);
    if (!el || el.disabled) return false;
    el.click();
    return true;
  };
  const focus = (selector) => {
    const el = document.querySelector(selector);
    if (el) el.focus();
    return Boolean(el);
  };
  const keys = {
    a: () => click('[data-key="a"]'),
    r: () => click('[data-key="r"]'),
    j: () => click('[data-key="next"]'),
    n: () => click('[data-key="next"]'),
    k: () => click('[data-key="prev"]'),
    p: () => click('[data-key="prev"]'),
    e: () => focus("#edit-form textarea"),
    c: () => focus("#comment"),
  };
  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) return;
    const action = keys[event.key];
    if (action && action()) event.preventDefault();
  });
  const advance = document.getElementById("auto-advance");
  if (advance) {
    advance.checked = localStorage.getItem("bft-review-advance") !== "off";
    advance.addEventListener("change", () => localStorage.setItem("bft-review-advance", advance.checked ? "on" : "off"));
  }
  document.body.addEventListener("traceDecided", (event) => {
    const box = document.getElementById("auto-advance");
    if (box && box.checked && event.detail && event.detail.next) window.location.assign(event.detail.next);
  });
})();
