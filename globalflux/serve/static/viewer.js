/* globalflux viewer: layer chooser, period slider, legend, applicability overlay and the series
   of a clicked pixel, over the API of globalflux/serve/app.py. Plain JavaScript + Leaflet
   (vendored); charts are drawn as SVG. */
(function () {
  "use strict";

  var $ = function (id) { return document.getElementById(id); };
  var state = { meta: null, layer: null, t: 0, tiles: null, aoa: null, point: null, marker: null,
                series: null, map: null };
  window.gfViewer = state;  // for tests and the console

  function fmt(v) {
    if (v === null || v === undefined || !isFinite(v)) { return "–"; }
    var a = Math.abs(v);
    if (a !== 0 && (a < 1e-3 || a >= 1e5)) { return v.toExponential(3); }
    return Number(v.toPrecision(4)).toString();
  }

  function esc(s) {
    return String(s).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }

  function showError(msg) {
    var e = $("error");
    e.textContent = msg;
    e.hidden = false;
  }

  function getJSON(url) {
    return fetch(url).then(function (r) {
      return r.json().then(function (body) {
        if (!r.ok) { throw new Error(body.error || ("HTTP " + r.status)); }
        return body;
      });
    });
  }

  function layerById(id) {
    for (var i = 0; i < state.meta.layers.length; i++) {
      if (state.meta.layers[i].id === id) { return state.meta.layers[i]; }
    }
    return null;
  }

  function storeOf(layer) {
    for (var i = 0; i < state.meta.stores.length; i++) {
      if (state.meta.stores[i].id === layer.store) { return state.meta.stores[i]; }
    }
    return null;
  }

  function periodText(layer, i) {
    if (layer.static) { return "static map (no time axis)"; }
    var p = storeOf(layer).periods[i];
    if (!p) { return layer.times[i]; }
    if (p.end && p.end !== p.start) { return p.start + " – " + p.end; }
    return p.start || p.label;
  }

  function tileUrl(layer, t, style) {
    var time = layer.static ? "static" : layer.times[Math.min(t, layer.times.length - 1)];
    return "/tiles/" + encodeURIComponent(layer.store) + "/" + encodeURIComponent(layer.name) +
      "/" + encodeURIComponent(time) + "/{z}/{x}/{y}.png" + (style ? "?style=" + style : "");
  }

  function bounds() {
    var b = state.meta.bbox;
    return L.latLngBounds([b[1], b[0]], [b[3], b[2]]);
  }

  // ------------------------------------------------------------------------------ legend
  function drawLegend(layer) {
    var el = $("legend");
    var html = "<h3>" + esc(layer.long_name) + "</h3>";
    html += "<div class='units'>" + esc(layer.id) + (layer.units ? " · units: <b>" + esc(layer.units) +
      "</b>" : "") + " · from " + (layer.source === "cog" ? "COGs" : "the Zarr store") + "</div>";
    if (layer.categories) {
      layer.categories.forEach(function (c) {
        html += "<div class='cat'><span class='swatch' style='background:" + c.color + "'></span>" +
          esc(c.value) + (String(c.label) !== String(c.value) ? " " + esc(c.label) : "") + "</div>";
      });
    } else {
      html += "<div class='ramp' style='background:linear-gradient(to right," +
        layer.stops.join(",") + ")'></div>";
      var mid = (layer.vmin + layer.vmax) / 2;
      html += "<div class='ticks'><span>≤ " + fmt(layer.vmin) + "</span><span>" + fmt(mid) +
        "</span><span>≥ " + fmt(layer.vmax) + "</span></div>";
      html += "<div class='units'>" + esc(layer.units || "no units") +
        " (2nd–98th percentile stretch)</div>";
    }
    if (layer.aoa && $("aoa").checked) {
      html += "<div class='cat'><span class='swatch' style='background:rgba(60,60,60,.67)'></span>" +
        "outside the area of applicability (" + esc(layer.aoa) + ")</div>";
    }
    if (layer.band) {
      html += "<div class='units'>uncertainty band: " + esc(layer.band.label) + "</div>";
    }
    el.innerHTML = html;
  }

  // ------------------------------------------------------------------------------ layers
  function setTime(t) {
    var layer = state.layer;
    state.t = Math.max(0, Math.min(t, layer.times.length - 1));
    $("time").value = state.t;
    $("time-label").textContent = periodText(layer, state.t);
    state.tiles.setUrl(tileUrl(layer, state.t));
    updateAoa();
    if (state.series) { drawSeries(); }
  }

  function updateAoa() {
    var layer = state.layer;
    if (state.aoa) { state.map.removeLayer(state.aoa); state.aoa = null; }
    $("aoa-box").hidden = !layer.aoa;
    if (!layer.aoa || !$("aoa").checked) { return; }
    var aoa = layerById(layer.aoa);
    var t = 0;
    if (!aoa.static) {
      var label = layer.static ? aoa.times[0] : layer.times[state.t];
      t = Math.max(0, aoa.times.indexOf(label));
    }
    state.aoa = L.tileLayer(tileUrl(aoa, t, "outside"),
      { bounds: bounds(), maxZoom: 22, pane: "overlayPane", zIndex: 5 }).addTo(state.map);
  }

  function setLayer(id) {
    var prev = state.layer;
    var layer = layerById(id);
    state.layer = layer;
    $("layer").value = id;
    var slider = $("time");
    slider.max = Math.max(0, layer.times.length - 1);
    $("time-box").style.visibility = layer.static ? "hidden" : "visible";
    var t = 0;
    if (prev && !prev.static && !layer.static) {
      var label = prev.times[state.t];
      var j = layer.times.indexOf(label);
      t = j >= 0 ? j : Math.min(state.t, layer.times.length - 1);
    }
    drawLegend(layer);
    setTime(t);
    if (state.point) { loadSeries(state.point); }
  }

  // ------------------------------------------------------------------------------ series
  function loadSeries(latlng) {
    state.point = latlng;
    if (state.marker) { state.marker.setLatLng(latlng); } else {
      state.marker = L.circleMarker(latlng, { radius: 6, color: "#d00", weight: 2, fill: false })
        .addTo(state.map);
    }
    var el = $("series");
    el.setAttribute("data-state", "loading");
    var url = "/api/series?layer=" + encodeURIComponent(state.layer.id) + "&lon=" +
      latlng.lng.toFixed(6) + "&lat=" + latlng.lat.toFixed(6);
    getJSON(url).then(function (s) {
      state.series = s;
      drawSeries();
    }).catch(function (err) {
      state.series = null;
      el.innerHTML = "<p class='err'>" + esc(err.message) + "</p>";
      el.setAttribute("data-state", "error");
      el.setAttribute("data-count", "0");
    });
  }

  var CHART = { width: 350, height: 170, left: 54, right: 8 };

  function chart(s, t) {
    var W = CHART.width, H = CHART.height, L0 = CHART.left, R0 = CHART.right, T0 = 8, B0 = 22;
    var n = s.values.length;
    var ys = [];
    s.values.forEach(function (v, i) {
      if (v !== null) { ys.push(v); }
      if (s.band && s.band.lo[i] !== null) { ys.push(s.band.lo[i]); ys.push(s.band.hi[i]); }
    });
    if (!ys.length) { return ""; }
    var lo = Math.min.apply(null, ys), hi = Math.max.apply(null, ys);
    if (hi === lo) { hi += 0.5; lo -= 0.5; }
    var pad = (hi - lo) * 0.06; lo -= pad; hi += pad;
    var X = function (i) { return L0 + (n > 1 ? i / (n - 1) : 0.5) * (W - L0 - R0); };
    var Y = function (v) { return T0 + (1 - (v - lo) / (hi - lo)) * (H - T0 - B0); };
    var svg = "<svg id='series-chart' width='" + W + "' height='" + H + "' role='img' " +
      "aria-label='series chart'>";
    svg += "<rect x='" + L0 + "' y='" + T0 + "' width='" + (W - L0 - R0) + "' height='" +
      (H - T0 - B0) + "' fill='#fafafa' stroke='#ccc'/>";
    [lo + pad, (lo + hi) / 2, hi - pad].forEach(function (v) {
      svg += "<text x='" + (L0 - 4) + "' y='" + (Y(v) + 3) + "' text-anchor='end'>" + fmt(v) +
        "</text><line x1='" + L0 + "' x2='" + (W - R0) + "' y1='" + Y(v) + "' y2='" + Y(v) +
        "' stroke='#eee'/>";
    });
    if (s.band) {  // the band as one polygon per run of defined values
      var runs = [], cur = [];
      for (var i = 0; i < n; i++) {
        if (s.band.lo[i] !== null && s.band.hi[i] !== null) { cur.push(i); } else if (cur.length) {
          runs.push(cur); cur = [];
        }
      }
      if (cur.length) { runs.push(cur); }
      runs.forEach(function (r) {
        var pts = r.map(function (k) { return X(k) + "," + Y(s.band.hi[k]); });
        r.slice().reverse().forEach(function (k) { pts.push(X(k) + "," + Y(s.band.lo[k])); });
        if (r.length === 1) {
          svg += "<line x1='" + X(r[0]) + "' x2='" + X(r[0]) + "' y1='" + Y(s.band.lo[r[0]]) +
            "' y2='" + Y(s.band.hi[r[0]]) + "' stroke='#9ecae1' stroke-width='6'/>";
        } else {
          svg += "<polygon class='band' points='" + pts.join(" ") + "' fill='#9ecae1' " +
            "fill-opacity='.6' stroke='none'/>";
        }
      });
    }
    var path = "", pen = false;
    s.values.forEach(function (v, k) {
      if (v === null) { pen = false; return; }
      path += (pen ? "L" : "M") + X(k).toFixed(1) + "," + Y(v).toFixed(1);
      pen = true;
    });
    svg += "<path d='" + path + "' fill='none' stroke='#08519c' stroke-width='1.6'/>";
    s.values.forEach(function (v, k) {
      if (v !== null) {
        svg += "<circle cx='" + X(k).toFixed(1) + "' cy='" + Y(v).toFixed(1) + "' r='" +
          (k === t ? 4 : 1.8) + "' fill='" + (k === t ? "#d00" : "#08519c") + "'/>";
      }
    });
    if (n > 1) {
      svg += "<line x1='" + X(t) + "' x2='" + X(t) + "' y1='" + T0 + "' y2='" + (H - B0) +
        "' stroke='#d00' stroke-dasharray='3,3'/>";
      svg += "<text x='" + L0 + "' y='" + (H - 6) + "'>" + esc(s.periods[0].label) + "</text>";
      svg += "<text x='" + (W - R0) + "' y='" + (H - 6) + "' text-anchor='end'>" +
        esc(s.periods[n - 1].label) + "</text>";
    }
    return svg + "</svg>";
  }

  function drawSeries() {
    var s = state.series, layer = layerById(s.layer), el = $("series");
    var t = layer.static ? 0 : Math.min(state.t, s.values.length - 1);
    var count = s.values.filter(function (v) { return v !== null; }).length;
    var u = layer.units && layer.units !== "1" ? " " + esc(layer.units) : "";
    var html = "<h3>At the clicked pixel: " + esc(layer.name) + "</h3>";
    html += "<div class='units'>pixel centre " + s.x.toFixed(4) + ", " + s.y.toFixed(4) +
      " (row " + s.row + ", column " + s.col + ")</div>";
    if (!count) {
      html += "<p class='hint'>No data at this pixel (sea, or outside the mapped area).</p>";
    } else {
      var v = s.values[t];
      html += "<p><span class='value' id='series-value'>" + fmt(v) + u + "</span>";
      if (s.category && s.category[t] !== null && String(s.category[t]) !== String(v)) {
        html += " (" + esc(s.category[t]) + ")";
      }
      html += "<br><span class='units'>" + esc(periodText(layer, t)) + "</span>";
      if (s.band && s.band.lo[t] !== null) {
        html += "<br>band " + fmt(s.band.lo[t]) + " – " + fmt(s.band.hi[t]) + u + " <span class='units'>(" +
          esc(s.band.label) + ")</span>";
      }
      if (s.aoa !== null && s.aoa !== undefined) {
        var a = Array.isArray(s.aoa) ? s.aoa[t] : s.aoa;
        if (a === 1 || a === 0) {  // 1 inside, 0 outside; -1 or none: not mapped
          html += "<br><span id='series-aoa'>" + (a === 1 ? "inside" : "<b>outside</b>") +
            " the area of applicability</span>";
        }
      }
      html += "</p>";
      if (s.values.length > 1) { html += chart(s, t); }
    }
    var ctx = Object.keys(s.context);
    if (ctx.length) {
      html += "<div class='units'>" + ctx.map(function (k) {
        var c = s.context[k];
        var val = c.label !== undefined ? c.label : fmt(c.value);
        return esc(k) + ": " + esc(val) + (c.units && c.units !== "1" ? " " + esc(c.units) : "");
      }).join(" · ") + "</div>";
    }
    if (count && s.values.length > 1) {
      html += "<details><summary>values per period</summary><table id='series-table'><tr>" +
        "<th>period</th><th>value</th>" + (s.band ? "<th>band</th>" : "") + "</tr>";
      s.values.forEach(function (val, k) {
        html += "<tr" + (k === t ? " style='background:#fee'" : "") + "><td>" +
          esc(s.periods[k].label) + "</td><td>" + fmt(val) + "</td>" +
          (s.band ? "<td>" + fmt(s.band.lo[k]) + " – " + fmt(s.band.hi[k]) + "</td>" : "") + "</tr>";
      });
      html += "</table></details>";
    }
    el.innerHTML = html;
    var svg = document.getElementById("series-chart");
    if (svg && !layer.static) {  // a click on the chart moves the slider to that period
      svg.style.cursor = "pointer";
      svg.addEventListener("click", function (e) {
        var r = svg.getBoundingClientRect(), n = s.values.length;
        var f = (e.clientX - r.left - CHART.left) / (CHART.width - CHART.left - CHART.right);
        setTime(Math.round(Math.max(0, Math.min(1, f)) * (n - 1)));
      });
    }
    el.setAttribute("data-state", "ready");
    el.setAttribute("data-count", String(count));
  }

  // ------------------------------------------------------------------------------ map
  function graticule(map) {
    var b = state.meta.bbox, span = Math.max(b[2] - b[0], b[3] - b[1]);
    var steps = [0.01, 0.02, 0.05, 0.1, 0.2, 0.25, 0.5, 1, 2, 5, 10, 15, 30, 45];
    var step = steps[steps.length - 1];
    for (var i = 0; i < steps.length; i++) { if (span / steps[i] <= 8) { step = steps[i]; break; } }
    var style = { color: "#789", weight: 0.6, opacity: 0.7, interactive: false, dashArray: "2,4" };
    var w = Math.floor(b[0] / step) * step, e = Math.ceil(b[2] / step) * step;
    var s = Math.floor(b[1] / step) * step, n = Math.ceil(b[3] / step) * step;
    for (var x = w; x <= e + 1e-9; x += step) { L.polyline([[s, x], [n, x]], style).addTo(map); }
    for (var y = s; y <= n + 1e-9; y += step) { L.polyline([[y, w], [y, e]], style).addTo(map); }
  }

  function init(meta) {
    state.meta = meta;
    document.title = meta.title + " – globalflux viewer";
    $("title").textContent = meta.title + " · globalflux " + meta.globalflux_version;
    if (meta.synthetic) {
      $("synthetic").hidden = false;
      $("synthetic").title = meta.note;
    }
    var sel = $("layer");
    meta.stores.forEach(function (st) {
      var g = document.createElement("optgroup");
      g.label = st.id + ".zarr — " + st.title +
        (st.partial ? " (being written: " + st.partial + ")" : "");
      meta.layers.forEach(function (l) {
        if (l.store !== st.id) { return; }
        var o = document.createElement("option");
        o.value = l.id;
        o.textContent = l.name + ": " + l.long_name + (l.units ? " [" + l.units + "]" : "");
        g.appendChild(o);
      });
      sel.appendChild(g);
    });
    var map = L.map("map", { zoomSnap: 1, maxZoom: 22, worldCopyJump: false, fadeAnimation: false });
    state.map = map;
    map.attributionControl.setPrefix("Leaflet");
    map.attributionControl.addAttribution(meta.synthetic ? "SYNTHETIC data · globalflux" : "globalflux");
    map.fitBounds(bounds());
    graticule(map);
    L.rectangle(bounds(), { color: "#555", weight: 1, fill: false, interactive: false }).addTo(map);
    state.tiles = L.tileLayer(tileUrl(layerById(meta.default_layer), 0), { bounds: bounds(), maxZoom: 22, opacity: 0.9,
                                    className: "gf-data", zIndex: 2 }).addTo(map);
    var Coords = L.Control.extend({
      onAdd: function () {
        var d = L.DomUtil.create("div", "gf-coords");
        map.on("mousemove", function (e) {
          d.textContent = e.latlng.lng.toFixed(4) + " E, " + e.latlng.lat.toFixed(4) + " N";
        });
        return d;
      }
    });
    new Coords({ position: "bottomleft" }).addTo(map);
    L.control.scale({ imperial: false }).addTo(map);
    map.on("click", function (e) { loadSeries(e.latlng); });
    sel.addEventListener("change", function () { setLayer(sel.value); });
    $("time").addEventListener("input", function () { setTime(parseInt(this.value, 10)); });
    $("aoa").addEventListener("change", function () { updateAoa(); drawLegend(state.layer); });
    $("opacity").addEventListener("input", function () { state.tiles.setOpacity(+this.value); });
    document.addEventListener("keydown", function (e) {
      if (e.target.tagName === "SELECT" || e.target.tagName === "INPUT") { return; }
      if (e.key === "ArrowRight") { setTime(state.t + 1); }
      if (e.key === "ArrowLeft") { setTime(state.t - 1); }
    });
    setLayer(meta.default_layer);
    document.body.setAttribute("data-ready", "true");
  }

  getJSON("/api/run").then(init).catch(function (err) { showError("globalflux viewer: " + err.message); });
})();
