// The lessons draw request paths and state machines as ```mermaid blocks, which GitHub renders. mdBook
// does not, so the book loads Mermaid and draws them in the page. Offline, or if the script cannot be
// fetched, the blocks stay as their text, which still reads.
(async () => {
  const blocks = document.querySelectorAll("code.language-mermaid");
  if (blocks.length === 0) {
    return;
  }
  try {
    const { default: mermaid } = await import(
      "https://cdn.jsdelivr.net/npm/mermaid@11/dist/mermaid.esm.min.mjs"
    );
    const dark = ["coal", "navy", "ayu"].some((t) => document.documentElement.classList.contains(t));
    mermaid.initialize({ startOnLoad: false, theme: dark ? "dark" : "default" });
    for (const code of blocks) {
      const diagram = document.createElement("pre");
      diagram.className = "mermaid";
      diagram.textContent = code.textContent;
      code.parentElement.replaceWith(diagram);
    }
    await mermaid.run({ querySelector: "pre.mermaid" });
  } catch (error) {
    console.warn("Mermaid did not load; the diagrams stay as text.", error);
  }
})();
