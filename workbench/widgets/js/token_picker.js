// Tokens as chips: hovering one sets `hovered`, clicking sets `selected`; `weights` shade them.
function render({ model, el }) {
  const root = document.createElement("div");
  root.className = "wb-token-picker";
  root.style.cssText = "font: 13px monospace; line-height: 2.1; max-width: 100%";
  el.appendChild(root);

  function draw() {
    root.innerHTML = "";
    const tokens = model.get("tokens");
    const weights = model.get("weights");
    const selected = model.get("selected");
    const hovered = model.get("hovered");
    tokens.forEach((text, k) => {
      const chip = document.createElement("span");
      chip.textContent = text;
      chip.dataset.index = String(k);
      const w = weights && weights.length === tokens.length ? Math.max(0, Math.min(1, weights[k])) : 0;
      const outline = k === selected ? "2px solid #D55E00" : k === hovered ? "2px solid #0072B2" : "1px solid #d0d7de";
      chip.style.cssText =
        `display: inline-block; padding: 0 4px; margin: 1px; border-radius: 3px; cursor: pointer;` +
        `border: ${outline}; background: rgba(0, 114, 178, ${w.toFixed(3)}); color: ${w > 0.55 ? "white" : "#1F2933"}`;
      chip.title = weights && weights.length === tokens.length ? `${k}: ${text} · ${Number(weights[k]).toPrecision(3)}` : `${k}: ${text}`;
      chip.addEventListener("mouseenter", () => {
        model.set("hovered", k);
        model.save_changes();
      });
      chip.addEventListener("click", () => {
        model.set("selected", k);
        model.save_changes();
      });
      root.appendChild(chip);
    });
  }

  draw();
  for (const name of ["tokens", "weights", "selected", "hovered"]) model.on(`change:${name}`, draw);
}

export default { render };
