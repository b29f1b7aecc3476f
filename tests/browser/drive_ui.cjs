// Drives the real ComfyUI web UI in headless Debian Chromium (playwright-core, no bundled browser).
// Loads each workflow, records dialogs and other notices, console errors and the frontend's own API prompt, saves a
// screenshot, and queues one workflow until its output image is shown. Started by run_browser_test.py, which checks
// results.json.
const fs = require("fs");
const path = require("path");
const { chromium } = require("playwright-core");

const env = (name) => {
  if (!process.env[name]) throw new Error(`${name} is not set`);
  return process.env[name];
};
const URL = env("COMFY_URL");
const ARTIFACTS = env("ARTIFACTS");
const WORKFLOWS = JSON.parse(env("WORKFLOWS"));
const RUN = env("RUN_WORKFLOW");
const FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync"];

// Dialogs, and the toasts and status cards newer frontends show instead (1.49: a missing node is a role=status card).
async function visibleNotices(page) {
  const selector = ".p-dialog, .p-toast-message, [role=alert], [role=alertdialog], [role=status]";
  return page.evaluate((sel) => [...document.querySelectorAll(sel)]
    .filter((el) => el.offsetParent !== null || el.getClientRects().length > 0)
    .map((el) => el.innerText.trim().slice(0, 400)), selector);
}

async function settle(page) {
  await page.evaluate(() => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done))));
  await page.waitForTimeout(300);
}

// Frame the whole graph below the tab bar and right of the side bar, for the screenshot only.
async function fitView(page) {
  await page.evaluate(() => {
    const canvas = window.app.canvas;
    const boxes = window.app.graph._nodes
      .map((n) => [n.pos[0], n.pos[1] - 30, n.pos[0] + n.size[0], n.pos[1] + n.size[1]])
      .concat((window.app.graph._groups ?? []).map((g) => { const [x, y, w, h] = g._bounding ?? g.bounding;
        return [x, y, x + w, y + h]; }));
    const [left, top] = [Math.min(...boxes.map((b) => b[0])), Math.min(...boxes.map((b) => b[1]))];
    const [right, bottom] = [Math.max(...boxes.map((b) => b[2])), Math.max(...boxes.map((b) => b[3]))];
    const area = { x: 80, y: 100, w: canvas.canvas.clientWidth - 110, h: canvas.canvas.clientHeight - 130 };
    const scale = Math.min(1, area.w / (right - left), area.h / (bottom - top));
    canvas.ds.scale = scale;
    canvas.ds.offset[0] = area.x / scale - left;
    canvas.ds.offset[1] = area.y / scale - top;
    canvas.setDirty(true, true);
  });
  await settle(page);
}

async function main() {
  const started = Date.now();
  const context = await chromium.launchPersistentContext(env("USER_DATA_DIR"), {
    executablePath: env("CHROMIUM"), headless: true, args: FLAGS, viewport: { width: 1600, height: 1000 },
  });
  // A returning user has dismissed the "Nodes 2.0" banner; it would cover the top of every screenshot.
  await context.addInitScript(() => localStorage.setItem("vueNodesBannerDismissed", "true"));
  const page = context.pages()[0] || (await context.newPage());
  let errors = [];
  page.on("console", (msg) => {
    if (msg.type() === "error") errors.push({ text: msg.text(), url: msg.location()?.url ?? "" });
  });
  page.on("pageerror", (err) => errors.push({ text: `uncaught: ${err.message}`, url: "" }));
  const viewed = [];
  page.on("response", (res) => {
    if (res.url().includes("/view?") && res.status() === 200) viewed.push(res.url());
  });

  await page.goto(URL, { waitUntil: "domcontentloaded" });
  await page.waitForFunction(() => window.app?.graph && window.LiteGraph?.registered_node_types?.FaceSnapFaceCrop,
    null, { timeout: 120000 });
  await settle(page);
  const results = { boot_seconds: (Date.now() - started) / 1000, boot_errors: errors, workflows: [] };
  results.startup_notices = await visibleNotices(page);
  results.startup_types = await page.evaluate(() => window.app.graph._nodes.map((n) => n.type));

  for (const file of WORKFLOWS) {
    errors = [];
    const name = path.basename(file, ".json");
    const data = JSON.parse(fs.readFileSync(file, "utf8"));
    const t0 = Date.now();
    await page.evaluate(async ([graph, title]) => { await window.app.loadGraphData(graph, true, true, title); },
      [data, name]);
    await settle(page);
    const state = await page.evaluate(() => ({
      types: window.app.graph._nodes.map((n) => n.type),
      unknown: window.app.graph._nodes.map((n) => n.type)
        .filter((t) => !window.LiteGraph.registered_node_types[t]),
    }));
    const prompt = await page.evaluate(async () => (await window.app.graphToPrompt()).output);
    const entry = { name, load_seconds: (Date.now() - t0) / 1000, node_count: state.types.length,
      unknown_types: state.unknown, notices: await visibleNotices(page), prompt };
    if (name === RUN) {
      const t1 = Date.now();
      const before = viewed.length;
      await page.evaluate(async () => { await window.app.queuePrompt(0, 1); });
      await page.waitForFunction(() => window.app.graph._nodes
        .filter((n) => n.type === "SaveImage" || n.type === "PreviewImage")
        .every((n) => (n.imgs?.length ?? 0) > 0), null, { timeout: 180000 });
      await settle(page);
      entry.run_seconds = (Date.now() - t1) / 1000;
      entry.images_viewed = viewed.slice(before);
      entry.shown_images = await page.evaluate(() => window.app.graph._nodes
        .filter((n) => n.imgs?.length).map((n) => ({ id: n.id, count: n.imgs.length,
          size: [n.imgs[0].naturalWidth, n.imgs[0].naturalHeight] })));
    }
    await fitView(page);
    entry.screenshot = path.join(ARTIFACTS, `${name}.png`);
    await page.screenshot({ path: entry.screenshot });
    entry.errors = errors;
    results.workflows.push(entry);
  }
  // Negative control: the same checks must notice a node type that no pack provides.
  const control = JSON.parse(fs.readFileSync(WORKFLOWS.find((f) => path.basename(f, ".json") === RUN), "utf8"));
  control.nodes[0].type = "FaceSnapNodeThatDoesNotExist";
  await page.evaluate(async (graph) => { await window.app.loadGraphData(graph, true, true, "negative_control"); },
    control);
  await settle(page);
  results.negative_control = {
    notices: await visibleNotices(page),
    unknown_types: await page.evaluate(() => window.app.graph._nodes.map((n) => n.type)
      .filter((t) => !window.LiteGraph.registered_node_types[t])),
    screenshot: path.join(ARTIFACTS, "negative_control.png"),
  };
  await page.screenshot({ path: results.negative_control.screenshot });
  results.total_seconds = (Date.now() - started) / 1000;
  fs.writeFileSync(path.join(ARTIFACTS, "results.json"), JSON.stringify(results, null, 1));
  await context.close();
}

main().catch((err) => { console.error(err); process.exit(1); });
