// bftweb: tiny helpers. htmx itself comes from django-htmx's vendored copy.
// Close the project switcher when clicking elsewhere.
document.addEventListener("click", (event) => {
  for (const menu of document.querySelectorAll("details.switcher[open]")) {
    if (!menu.contains(event.target)) menu.removeAttribute("open");
  }
});
// Copy buttons: <button data-copy="#selector"> copies that element's text (the job page's model id).
document.addEventListener("click", async (event) => {
  const button = event.target.closest("[data-copy]");
  const source = button && document.querySelector(button.dataset.copy);
  if (!source) return;
  const text = source.textContent.trim();
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    const range = document.createRange(); // no clipboard API (plain http): select it for Ctrl-C
    range.selectNodeContents(source);
    getSelection().removeAllRanges();
    getSelection().addRange(range);
    button.textContent = "Selected: press Ctrl-C";
    return;
  }
  button.textContent = "Copied";
  setTimeout(() => { button.textContent = "Copy"; }, 1500);
});
