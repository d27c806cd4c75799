// An image with one coloured cell per patch; clicking a patch sets `selected`.
const SCALES = {
  Inferno: ["#000004", "#420a68", "#932667", "#dd513a", "#fca50a", "#fcffa4"],
  Viridis: ["#440154", "#414487", "#2a788e", "#22a884", "#7ad151", "#fde725"],
  Turbo: ["#30123b", "#4686fb", "#1ae4b6", "#a2fc3c", "#faba39", "#e4460a", "#7a0403"],
  RdBu_r: ["#053061", "#4393c3", "#f7f7f7", "#d6604d", "#67001f"],
};

function hexToRgb(hex) {
  const n = parseInt(hex.slice(1), 16);
  return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
}

function colourAt(scale, t) {
  const stops = (SCALES[scale] || SCALES.Inferno).map(hexToRgb);
  const x = Math.min(1, Math.max(0, t)) * (stops.length - 1);
  const i = Math.min(stops.length - 2, Math.floor(x));
  const f = x - i;
  return stops[i].map((c, k) => Math.round(c + f * (stops[i + 1][k] - c)));
}

function render({ model, el }) {
  const root = document.createElement("div");
  root.className = "wb-patch-picker";
  const title = document.createElement("div");
  title.style.cssText = "font: 13px sans-serif; margin: 4px 0; color: #1F2933";
  const canvas = document.createElement("canvas");
  canvas.style.cssText = "cursor: crosshair; image-rendering: pixelated; display: block";
  const bar = document.createElement("div");
  bar.style.cssText = "font: 11px sans-serif; color: #555; margin-top: 4px";
  const tip = document.createElement("div");
  tip.style.cssText = "font: 12px sans-serif; color: #1F2933; min-height: 16px";
  root.append(title, canvas, bar, tip);
  el.appendChild(root);
  const image = new Image();

  function geometry() {
    const [gh, gw] = model.get("grid");
    const width = model.get("width");
    const height = Math.round((width * image.naturalHeight) / Math.max(1, image.naturalWidth));
    return { gh, gw, width, height, cw: width / gw, ch: height / gh };
  }

  function draw() {
    if (!image.complete || !image.naturalWidth) return;
    const g = geometry();
    canvas.width = g.width;
    canvas.height = g.height;
    const ctx = canvas.getContext("2d");
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(image, 0, 0, g.width, g.height);
    const scores = model.get("scores");
    const lo = model.get("zmin"), hi = model.get("zmax");
    if (scores && scores.length === g.gh * g.gw) {
      ctx.globalAlpha = model.get("opacity");
      scores.forEach((s, k) => {
        const [r, gr, b] = colourAt(model.get("colorscale"), (s - lo) / Math.max(1e-12, hi - lo));
        ctx.fillStyle = `rgb(${r},${gr},${b})`;
        ctx.fillRect((k % g.gw) * g.cw, Math.floor(k / g.gw) * g.ch, g.cw, g.ch);
      });
      ctx.globalAlpha = 1;
      const stops = (SCALES[model.get("colorscale")] || SCALES.Inferno).join(", ");
      bar.innerHTML = "";
      const name = document.createElement("span");
      name.textContent = `${model.get("colorbar_title") || "score"}  ${lo.toPrecision(3)} `;
      const strip = document.createElement("span");
      strip.style.cssText = `display: inline-block; width: 120px; height: 10px; vertical-align: middle; background: linear-gradient(to right, ${stops})`;
      const top = document.createElement("span");
      top.textContent = ` ${hi.toPrecision(3)}`;
      bar.append(name, strip, top);
    } else {
      bar.textContent = "";
    }
    const sel = model.get("selected");
    if (sel >= 0 && model.get("outline")) {
      ctx.strokeStyle = "#00E5FF";
      ctx.lineWidth = 3;
      ctx.strokeRect((sel % g.gw) * g.cw + 1.5, Math.floor(sel / g.gw) * g.ch + 1.5, g.cw - 3, g.ch - 3);
    }
    title.textContent = model.get("title");
  }

  function patchAt(event) {
    const g = geometry();
    const rect = canvas.getBoundingClientRect();
    const col = Math.floor(((event.clientX - rect.left) / rect.width) * g.gw);
    const row = Math.floor(((event.clientY - rect.top) / rect.height) * g.gh);
    if (col < 0 || row < 0 || col >= g.gw || row >= g.gh) return -1;
    return row * g.gw + col;
  }

  canvas.addEventListener("click", (event) => {
    const k = patchAt(event);
    if (k < 0) return;
    model.set("selected", k);
    model.save_changes();
  });
  canvas.addEventListener("mousemove", (event) => {
    const k = patchAt(event);
    const scores = model.get("scores");
    if (k < 0) return;
    const score = scores && scores.length > k ? ` · score ${Number(scores[k]).toPrecision(3)}` : "";
    const gw = model.get("grid")[1];
    tip.textContent = `patch ${k} (row ${Math.floor(k / gw)}, col ${k % gw})${score}`;
  });
  canvas.addEventListener("mouseleave", () => (tip.textContent = ""));

  image.onload = draw;
  image.src = model.get("image_src");
  const redraw = () => draw();
  model.on("change:image_src", () => (image.src = model.get("image_src")));
  for (const name of ["scores", "selected", "outline", "zmin", "zmax", "colorscale", "opacity", "title", "grid", "width"]) {
    model.on(`change:${name}`, redraw);
  }
}

export default { render };
