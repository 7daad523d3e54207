// hxstate's own script: what plain HTML and htmx cannot do. Loaded from this origin (the CSP allows
// no inline script); every page works without it.
"use strict";

// A banner in the alert region can be dismissed.
document.addEventListener("click", (event) => {
  const dismiss = event.target.closest(".alert .dismiss");
  if (dismiss) dismiss.closest(".alert").remove();
});
