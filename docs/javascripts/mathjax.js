// MathJax 3 for the site: arithmatex's \( \) and \[ \] in the pages, and the $ $ and $$ $$
// of the tutorials' markdown cells (rendered by mkdocs-jupyter as jp-RenderedMarkdown).
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"], ["$", "$"]],
    displayMath: [["\\[", "\\]"], ["$$", "$$"]],
    processEscapes: true,
    processEnvironments: true
  },
  // an element with a class is skipped unless it is one of these; one without a class (the <p> of a
  // notebook cell) inherits from its parent, so the cells' paragraphs are typeset and nothing else
  options: { ignoreHtmlClass: ".+", processHtmlClass: "arithmatex|jp-RenderedMarkdown" }
};
document$.subscribe(() => { MathJax.typesetPromise && MathJax.typesetPromise(); });
