// hxstate's own script: what plain HTML and htmx cannot do. Loaded from this origin (the CSP allows
// no inline script); every page works without it.
"use strict";

// Controls that need this script are shown only when it runs (app.css: .js).
document.documentElement.classList.add("js");

// A banner in the alert region can be dismissed.
document.addEventListener("click", (event) => {
  const dismiss = event.target.closest(".alert .dismiss");
  if (dismiss) dismiss.closest(".alert").remove();
});

// The message box: Enter sends, Shift+Enter starts a new line (so does Enter while an input method
// composes a character).
document.addEventListener("keydown", (event) => {
  const box = event.target;
  if (box.id !== "message" || event.key !== "Enter" || event.shiftKey || event.isComposing) return;
  event.preventDefault();
  box.form.requestSubmit();
});

// The message box's character count against its limit, counted as its maxlength counts.
document.addEventListener("input", (event) => {
  const box = event.target;
  if (box.id !== "message") return;
  const count = document.getElementById("message-count");
  if (count) count.textContent = `${box.value.length} of ${count.dataset.limit} characters`;
});

// Copy on a reply puts its text on the clipboard and says so for a moment.
document.addEventListener("click", async (event) => {
  const button = event.target.closest(".bubble .copy");
  if (!button) return;
  const text = button.closest(".bubble").querySelector(".text").innerText.trim();
  try {
    await navigator.clipboard.writeText(text);
    button.textContent = "Copied";
  } catch {
    button.textContent = "Copy failed";
  }
  setTimeout(() => { button.textContent = "Copy"; }, 2000);
});

// Stop on a reply being written asks the server to end it; the reply's stream then brings the
// stopped reply.
document.addEventListener("click", (event) => {
  const button = event.target.closest(".bubble .stop");
  if (!button) return;
  const token = button.form.querySelector("input[name=csrf_token]").value;
  button.disabled = true;
  fetch(button.dataset.url, { method: "POST", headers: { "X-CSRFToken": token }, credentials: "same-origin" })
    .finally(() => { button.disabled = false; });
});

// The list of conversations starts folded on a narrow screen, where it would push the chat down;
// it is open otherwise, and without this script.
const foldConversations = () => {
  if (!window.matchMedia("(max-width: 47.99rem)").matches) return;
  for (const list of document.querySelectorAll("details.conversations[open]:not([data-seen])")) {
    list.open = false;
    list.dataset.seen = "";
  }
};
foldConversations();
document.addEventListener("htmx:after:swap", foldConversations);
