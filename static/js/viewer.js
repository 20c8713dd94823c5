// The review page's image viewer on OpenSeadragon (static/vendor/openseadragon, BSD-3-Clause): zoom, pan, fit and
// full screen come from the library; brightness, contrast, invert and, for 16-bit X-rays, the window/level change
// the pixel values themselves, through OpenSeadragon's tile pipeline (the 'tile-invalidated' event). A 16-bit
// X-ray is drawn from its stored 16-bit values (?variant=pixels16: little-endian, row by row), so a window/level
// change re-maps the real data rather than stretching an 8-bit preview. No inline scripts, no eval (CSP).
(function () {
  "use strict";
  if (!window.OpenSeadragon) return;
  const OSD = window.OpenSeadragon;

  // One 256-entry table for brightness/contrast/invert: v -> clamp(((v/255 - .5) * c + .5 + b) * 255), inverted last.
  function toneTable(settings) {
    const lut = new Uint8ClampedArray(256);
    const c = Math.pow((100 + settings.contrast) / 100, 2); // -100..100 -> 0..4
    const b = settings.brightness / 200; // -100..100 -> -.5...5
    for (let v = 0; v < 256; v += 1) {
      let out = ((v / 255 - 0.5) * c + 0.5 + b) * 255;
      if (settings.invert) out = 255 - out;
      lut[v] = out;
    }
    return lut;
  }

  function neutral(settings) {
    return settings.brightness === 0 && settings.contrast === 0 && !settings.invert;
  }

  // 65536-entry table: raw 16-bit value -> windowed 8-bit value -> tone table.
  function rawTable(settings) {
    const tone = toneTable(settings);
    const [low, high] = settings.window;
    const span = Math.max(1, high - low);
    const lut = new Uint8Array(65536);
    for (let v = 0; v < 65536; v += 1) {
      const w = v <= low ? 0 : v >= high ? 255 : Math.round(((v - low) * 255) / span);
      lut[v] = tone[w];
    }
    return lut;
  }

  function rawCanvas(raw, width, height, settings) {
    const canvas = document.createElement("canvas");
    canvas.width = width;
    canvas.height = height;
    const ctx = canvas.getContext("2d", { willReadFrequently: true });
    const pixels = ctx.createImageData(width, height);
    const out = pixels.data;
    const lut = rawTable(settings);
    for (let i = 0, j = 0; i < raw.length; i += 1, j += 4) {
      const v = lut[raw[i]];
      out[j] = v; out[j + 1] = v; out[j + 2] = v; out[j + 3] = 255;
    }
    ctx.putImageData(pixels, 0, 0);
    return ctx;
  }

  function toneContext(ctx, settings) {
    const canvas = ctx.canvas;
    const pixels = ctx.getImageData(0, 0, canvas.width, canvas.height);
    const out = pixels.data;
    const lut = toneTable(settings);
    for (let j = 0; j < out.length; j += 4) {
      out[j] = lut[out[j]]; out[j + 1] = lut[out[j + 1]]; out[j + 2] = lut[out[j + 2]];
    }
    ctx.putImageData(pixels, 0, 0);
    return ctx;
  }

  const keyOf = (s) => [s.brightness, s.contrast, s.invert ? 1 : 0].concat(s.window || []).join(",");

  // image: {width, height, preview_url, preview_size, original_url, pixels_url, window, bit_depth}
  function create(container, image, handlers) {
    const view = {
      image: image,
      container: container,
      settings: { brightness: 0, contrast: 0, invert: false, window: image.window ? image.window.slice() : null },
      raw: null,
      drawn: false,
      tileKey: null,
    };
    const sixteen = !!image.pixels_url;
    let source;
    if (sixteen) {
      if (!view.settings.window) view.settings.window = [0, 65535];
      const rawPromise = fetch(image.pixels_url, { credentials: "same-origin" }).then((response) => {
        if (!response.ok) throw new Error("16-bit pixels: " + response.status);
        return response.arrayBuffer();
      }).then((buffer) => {
        view.raw = new Uint16Array(buffer);
        return view.raw;
      });
      const side = Math.max(image.width, image.height);
      const level = Math.ceil(Math.log2(side));
      // One full-resolution tile made from the 16-bit values (OpenSeadragon scales it for every zoom).
      source = new OSD.TileSource({
        width: image.width, height: image.height, tileSize: side, tileOverlap: 0, minLevel: level, maxLevel: level,
        getTileUrl: () => image.pixels_url,
        downloadTileStart: (job) => {
          rawPromise.then((raw) => {
            view.tileKey = keyOf(view.settings);
            job.finish(rawCanvas(raw, image.width, image.height, view.settings), null, "context2d");
          }).catch((err) => job.fail(String(err)));
        },
        downloadTileAbort: () => {},
      });
    } else {
      // The 1024-px preview first, the full-size original when zoomed in past it.
      const levels = [{ url: image.preview_url, width: image.preview_size[0], height: image.preview_size[1] }];
      if (image.preview_size[0] < image.width) levels.push({ url: image.original_url, width: image.width, height: image.height });
      source = { type: "legacy-image-pyramid", levels: levels };
    }

    const osd = OSD({
      element: container,
      drawer: "canvas", // 2D canvas: its pixels can be read back (tests compare them)
      tileSources: source,
      showNavigationControl: false,
      keyboardNavEnabled: false, // the page's own shortcuts (documented on the page) drive the viewer
      crossOriginPolicy: false,
      visibilityRatio: 0.6,
      minZoomImageRatio: 0.8,
      maxZoomPixelRatio: 6,
      animationTime: 0.35,
      imageLoaderLimit: 2,
      gestureSettingsMouse: { clickToZoom: false, dblClickToZoom: true, scrollToZoom: true },
      gestureSettingsTouch: { clickToZoom: false, dblClickToZoom: true, pinchToZoom: true, flickEnabled: true },
      preserveImageSizeOnResize: true,
    });
    view.osd = osd;

    osd.addHandler("tile-invalidated", async (event) => {
      if (sixteen) {
        if (!view.raw || keyOf(view.settings) === view.tileKey) return;
        await event.setData(rawCanvas(view.raw, image.width, image.height, view.settings), "context2d");
        return;
      }
      if (neutral(view.settings)) return;
      const ctx = await event.getData("context2d");
      await event.setData(toneContext(ctx, view.settings), "context2d");
    });
    osd.addHandler("open", () => {
      const item = osd.world.getItemAt(0);
      const done = () => {
        if (view.drawn || !item.getFullyLoaded()) return;
        // drawn on the next frame: the canvas holds the image when the handler runs
        window.requestAnimationFrame(() => {
          view.drawn = true;
          container.dataset.drawn = "true";
          if (handlers.drawn) handlers.drawn(view);
        });
      };
      item.addHandler("fully-loaded-change", done);
      done();
    });
    osd.addHandler("update-viewport", () => { if (handlers.viewport) handlers.viewport(view); });
    osd.addHandler("open-failed", () => { container.dataset.failed = "true"; });

    view.item = () => osd.world.getItemAt(0);
    // image-normalised [0..1] -> pixels inside the viewer element, and back
    view.toScreen = (nx, ny) => {
      const item = view.item();
      if (!item) return null;
      const size = item.getContentSize();
      return item.imageToViewerElementCoordinates(new OSD.Point(nx * size.x, ny * size.y));
    };
    view.toImage = (clientX, clientY) => {
      const item = view.item();
      const rect = osd.element.getBoundingClientRect();
      const size = item.getContentSize();
      const point = item.viewerElementToImageCoordinates(new OSD.Point(clientX - rect.left, clientY - rect.top));
      return [point.x / size.x, point.y / size.y];
    };
    view.apply = (changes) => {
      Object.assign(view.settings, changes);
      return osd.requestInvalidate(true);
    };
    view.zoomBy = (factor) => { osd.viewport.zoomBy(factor); osd.viewport.applyConstraints(); };
    view.panBy = (dx, dy) => {
      const bounds = osd.viewport.getBounds();
      osd.viewport.panBy(new OSD.Point(bounds.width * dx, bounds.height * dy));
      osd.viewport.applyConstraints();
    };
    view.fit = () => osd.viewport.goHome();
    view.state = () => {
      const bounds = osd.viewport.getBounds(true);
      return { zoom: osd.viewport.getZoom(true), x: bounds.x, y: bounds.y, width: bounds.width, height: bounds.height };
    };
    view.canvas = () => osd.drawer.canvas;
    return view;
  }

  window.DentalViewer = { create: create, toneTable: toneTable };
})();
