// MathJax 3 for pymdownx.arithmatex (generic mode: \( … \) inline, \[ … \] display) and
// for the Markdown cells of the notebooks rendered by mkdocs-jupyter ($ … $, $$ … $$).
// Code (pre, code) is never typeset: MathJax skips those tags by default.
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"], ["$", "$"]],
    displayMath: [["\\[", "\\]"], ["$$", "$$"]],
    processEscapes: true,
    processEnvironments: true,
  },
};

document$.subscribe(() => {
  MathJax.startup.output.clearCache();
  MathJax.typesetClear();
  MathJax.texReset();
  MathJax.typesetPromise();
});
