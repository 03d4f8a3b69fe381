// Render the math that pymdownx.arithmatex (generic mode) leaves in the page:
// inline \( ... \) in span.arithmatex, display \[ ... \] in div.arithmatex.
// Uses the KaTeX copy bundled under docs/assets/katex (no network needed).
// document$ is Material's page observable, so this also runs after instant navigation.
function renderDalipMath(root) {
  if (typeof renderMathInElement !== "function") return;
  root.querySelectorAll(".arithmatex").forEach(function (el) {
    renderMathInElement(el, {
      delimiters: [
        { left: "\\[", right: "\\]", display: true },
        { left: "\\(", right: "\\)", display: false },
      ],
      throwOnError: false,
    });
  });
}

if (typeof document$ !== "undefined") {
  document$.subscribe(function ({ body }) { renderDalipMath(body); });
} else {
  document.addEventListener("DOMContentLoaded", function () { renderDalipMath(document.body); });
}
