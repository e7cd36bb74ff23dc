/* lossdial report: the live dial. Hand-written, no library, nothing fetched: reads the JSON in #dial-data
   (written by lossdial/report/dial.py, whose docstring states every formula used here) and redraws the
   readouts and the inline SVG plots whenever a control moves. */
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("dial-data").textContent);
  var MAIN = D.runs[0];
  var SVGNS = "http://www.w3.org/2000/svg";

  function $(id) { return document.getElementById(id); }
  function def(v) { return v !== null && v !== undefined && isFinite(v); }
  function fmt(v, d) { return def(v) ? Number(v).toFixed(d === undefined ? 3 : d) : "-"; }
  function setText(id, text) { var e = $(id); if (e) { e.textContent = text; } }
  function lamText(lam) {
    var keys = Object.keys(lam || {});
    if (!keys.length) { return "(fixed)"; }
    return keys.map(function (k) { return k + "=" + (+lam[k].toPrecision(4)); }).join(", ");
  }
  function esc(s) {
    return String(s).replace(/[&<>"]/g, function (c) { return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c]; });
  }
  function sameLambda(a, b) {
    var ka = Object.keys(a || {}), kb = Object.keys(b || {});
    if (ka.length !== kb.length) { return false; }
    return ka.every(function (k) { return b.hasOwnProperty(k) && Math.abs(a[k] - b[k]) <= 1e-9 * Math.max(1, Math.abs(a[k])); });
  }

  /* ---------------------------------------------------------------- lambda sliders (main run) */
  var NAMES = MAIN.lambda_names;
  var VALUES = {};  // name -> its distinct grid values, ascending
  NAMES.forEach(function (n) {
    var seen = {};
    VALUES[n] = MAIN.lambdas.map(function (l) { return l[n]; })
      .filter(function (v) { if (seen[v]) { return false; } seen[v] = true; return true; })
      .sort(function (a, b) { return a - b; });
  });
  /* the grid index whose lambda is closest to the values the sliders name (exact when on the grid) */
  function lambdaIndexFromSliders() {
    if (!NAMES.length) { return 0; }
    var want = {};
    NAMES.forEach(function (n) { want[n] = VALUES[n][+$("lam-" + n).value]; });
    return nearestLambda(MAIN, want);
  }
  function nearestLambda(run, want) {
    var best = 0, bestD = Infinity;
    run.lambdas.forEach(function (l, k) {
      var d = 0;
      run.lambda_names.forEach(function (n) {
        var span = (VALUES[n] ? VALUES[n][VALUES[n].length - 1] - VALUES[n][0] : 1) || 1;
        d += Math.pow(((want[n] === undefined ? l[n] : want[n]) - l[n]) / span, 2);
      });
      if (d < bestD - 1e-15) { bestD = d; best = k; }
    });
    return best;
  }
  function setLambdaSliders(k) {
    NAMES.forEach(function (n) {
      $("lam-" + n).value = VALUES[n].indexOf(MAIN.lambdas[k][n]);
    });
  }
  function showLambdaSliders(k) {
    NAMES.forEach(function (n) { setText("lam-" + n + "-value", (+MAIN.lambdas[k][n].toPrecision(4)).toString()); });
  }

  /* ---------------------------------------------------------------- ties, as pick breaks them */
  var TIE_TOL = 1e-9;  // lossdial.evaluate.sweep.TIE_TOLERANCE
  /* which values (higher is better, undefined worst) tie with the best: lossdial.evaluate.sweep._near_best */
  function nearBest(vals) {
    var top = -Infinity;
    vals.forEach(function (v) { if (def(v) && v > top) { top = v; } });
    if (top === -Infinity) { return vals.map(function () { return true; }); }
    return vals.map(function (v) { return def(v) && v >= top - TIE_TOL * Math.max(1, Math.abs(top)); });
  }
  /* lossdial.evaluate.sweep.break_ties: among the lambda indices `tied`, keep those tying on each measure in turn
     (functions of k, higher is better), then the centre of the largest block of grid-adjacent ones (coordinates:
     each name's rank among its distinct values; adjacent: every coordinate within one step; equal sizes: the
     block with the earliest index), the index nearest the block's mean position (equal distances: the earlier) */
  function breakTies(run, tied, measures) {
    var idx = tied.slice().sort(function (a, b) { return a - b; });
    measures.forEach(function (f) {
      if (idx.length < 2) { return; }
      var keep = nearBest(idx.map(f));
      idx = idx.filter(function (k, i) { return keep[i]; });
    });
    if (idx.length < 2) { return idx[0]; }
    var ranks = run.lambda_names.map(function (n) {
      var vals = run.lambdas.map(function (l) { return l[n]; }).sort(function (a, b) { return a - b; });
      return vals.filter(function (v, i) { return i === 0 || v !== vals[i - 1]; });
    });
    var pts = idx.map(function (k) {
      return run.lambda_names.map(function (n, d) { return ranks[d].indexOf(run.lambdas[k][n]); });
    });
    var block = idx.map(function (k, a) { return a; });  // union-find over adjacent points
    function root(a) { while (block[a] !== a) { a = block[a]; } return a; }
    for (var a = 0; a < pts.length; a++) {
      for (var b = a + 1; b < pts.length; b++) {
        var far = pts[a].some(function (v, d) { return Math.abs(v - pts[b][d]) > 1 + 1e-9; });
        if (!far && root(a) !== root(b)) { block[root(b)] = root(a); }
      }
    }
    var groups = {}, run_ = null;
    pts.forEach(function (p, a) { var r = root(a); (groups[r] = groups[r] || []).push(a); });
    Object.keys(groups).forEach(function (r) {  // members in grid order, so g[0] is the earliest
      var g = groups[r];
      if (!run_ || g.length > run_.length || (g.length === run_.length && g[0] < run_[0])) { run_ = g; }
    });
    var centre = pts[0].map(function (v, d) {
      return run_.reduce(function (acc, a) { return acc + pts[a][d]; }, 0) / run_.length;
    });
    var best = run_[0], bestD = Infinity;
    run_.forEach(function (a) {
      var dd = pts[a].reduce(function (acc, v, d) { return acc + Math.pow(v - centre[d], 2); }, 0);
      if (dd < bestD - 1e-9) { bestD = dd; best = a; }
    });
    return idx[best];
  }

  /* ---------------------------------------------------------------- SVG helpers */
  function el(name, attrs, parent) {
    var e = document.createElementNS(SVGNS, name);
    Object.keys(attrs).forEach(function (a) { e.setAttribute(a, attrs[a]); });
    if (parent) { parent.appendChild(e); }
    return e;
  }
  function txt(parent, x, y, s, attrs) {
    var t = el("text", Object.assign({ x: x, y: y, "font-size": 10 }, attrs || {}), parent);
    t.textContent = s;
    return t;
  }
  /* axes on [x0, x1] x [y0, y1] inside a box; returns the coordinate maps. legend goes right of the box. */
  function axes(svg, box, xr, yr, xlabel, ylabel, title, noXTicks) {
    while (svg.firstChild) { svg.removeChild(svg.firstChild); }
    var X = function (v) { return box.l + (v - xr[0]) / (xr[1] - xr[0]) * box.w; };
    var Y = function (v) { return box.t + box.h - (v - yr[0]) / (yr[1] - yr[0]) * box.h; };
    el("rect", { x: box.l, y: box.t, width: box.w, height: box.h, fill: "none", stroke: "#888" }, svg);
    for (var i = 0; i <= 4; i++) {
      var fx = xr[0] + i / 4 * (xr[1] - xr[0]), fy = yr[0] + i / 4 * (yr[1] - yr[0]);
      el("line", { x1: X(fx), x2: X(fx), y1: box.t, y2: box.t + box.h, stroke: "#eee" }, svg);
      el("line", { x1: box.l, x2: box.l + box.w, y1: Y(fy), y2: Y(fy), stroke: "#eee" }, svg);
      if (!noXTicks) { txt(svg, X(fx), box.t + box.h + 12, +fx.toFixed(2), { "text-anchor": "middle", "font-size": 9 }); }
      txt(svg, box.l - 4, Y(fy) + 3, +fy.toFixed(2), { "text-anchor": "end", "font-size": 9 });
    }
    txt(svg, box.l + box.w / 2, box.t + box.h + (noXTicks ? 34 : 26), xlabel, { "text-anchor": "middle" });
    txt(svg, 11, box.t + box.h / 2, ylabel, { "text-anchor": "middle", transform: "rotate(-90 11 " + (box.t + box.h / 2) + ")" });
    txt(svg, box.l, box.t - 6, title, { "font-weight": "bold" });
    return { X: X, Y: Y };
  }
  function polyline(svg, pts, attrs) {
    var d = pts.filter(function (p) { return def(p[0]) && def(p[1]); })
      .map(function (p) { return p[0].toFixed(2) + "," + p[1].toFixed(2); }).join(" ");
    return el("polyline", Object.assign({ points: d, fill: "none" }, attrs), svg);
  }
  function marker(svg, shape, x, y, color, title) {
    var m;
    if (!def(x) || !def(y)) { return null; }
    if (shape === "circle") { m = el("circle", { cx: x, cy: y, r: 5, fill: color, stroke: "#000" }, svg); }
    else if (shape === "square") { m = el("rect", { x: x - 4, y: y - 4, width: 8, height: 8, fill: color, stroke: "#000" }, svg); }
    else { m = el("polygon", { points: [x, y - 6, x - 5, y + 4, x + 5, y + 4].join(","), fill: color, stroke: "#000" }, svg); }
    if (title) { el("title", {}, m).textContent = title; }
    return m;
  }
  function legend(svg, x, y, items) {
    items.forEach(function (it, i) {
      var yy = y + i * 14;
      if (it.shape) { marker(svg, it.shape, x + 6, yy - 3, it.color); }
      else { el("line", { x1: x, x2: x + 14, y1: yy - 3, y2: yy - 3, stroke: it.color, "stroke-width": 2, "stroke-dasharray": it.dash || "" }, svg); }
      txt(svg, x + 18, yy, it.label, { "font-size": 9 });
    });
  }
  /* a model card metric: the validation value, then the test value with its 95% bootstrap interval */
  function cardCell(cp) {
    return function (k) {
      var ci = (cp.test_ci95 || {})[k];
      return "<td>" + fmt((cp.val || {})[k]) + "<br>" + fmt((cp.test || {})[k]) +
        (ci ? " [" + fmt(ci[0]) + ", " + fmt(ci[1]) + "]" : "") + "</td>";
    };
  }
  var COLORS = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22"];

  if (D.task === "binary") { binary(); } else { multiclass(); }

  /* ================================================================ binary */
  function binary() {
    var st = { k: 0, thr: 0.5, pi: D.prevalence, cfp: D.costs[0], cfn: D.costs[1], mode: "manual", target: 0.9 };

    /* the stored curve point for "predict positive when score >= thr": the lowest stored threshold >= thr */
    function pointAt(run, k, thr) {
      var c = run.curves[k], j = -1, lo = 0, hi = c.threshold.length - 1;
      while (lo <= hi) {  // thresholds are descending: find the last index with threshold >= thr
        var mid = (lo + hi) >> 1;
        if (c.threshold[mid] >= thr) { j = mid; lo = mid + 1; } else { hi = mid - 1; }
      }
      return j < 0 ? { j: -1, threshold: null, tp: 0, fp: 0 } : { j: j, threshold: c.threshold[j], tp: c.tp[j], fp: c.fp[j] };
    }
    function measures(run, tp, fp) {
      var P = run.n_pos, N = run.n_neg, pi = st.pi;
      var tpr = P ? tp / P : NaN, fpr = N ? fp / N : NaN;
      var den = pi * tpr + (1 - pi) * fpr;
      var precision = den > 0 ? pi * tpr / den : NaN;
      var f1 = def(precision) && precision + tpr > 0 ? 2 * precision * tpr / (precision + tpr) : (tp === 0 ? 0 : NaN);
      return {
        tp: tp, fp: fp, fn: P - tp, tn: N - fp, tpr: tpr, fpr: fpr, precision: precision, recall: tpr, f1: f1,
        cost: st.cfp * (1 - pi) * fpr + st.cfn * pi * (1 - tpr),
        per10k: { tp: 1e4 * pi * tpr, fn: 1e4 * pi * (1 - tpr), fp: 1e4 * (1 - pi) * fpr, tn: 1e4 * (1 - pi) * (1 - fpr) }
      };
    }
    /* best point of a run meeting the target: recall >= r (max precision, then recall) or precision >= p
       (max recall, then precision); at least min_tp validation true positives; ties as pick breaks them
       (breakTies): the higher validation AUC, then the lower Brier score at this prevalence, then the centre of
       the widest tied run of lambdas - not the earlier lambda */
    function snap(run, metric, target) {
      var found = [];  // each lambda's best point
      run.curves.forEach(function (c, k) {
        var best = null;
        for (var j = 0; j < c.threshold.length; j++) {
          if (c.tp[j] < D.min_tp) { continue; }
          var m = measures(run, c.tp[j], c.fp[j]);
          var v = metric === "recall" ? m.recall : m.precision;
          if (!def(v) || v < target - 1e-12) { continue; }
          var key = metric === "recall" ? [m.precision, m.recall] : [m.recall, m.precision];
          if (!def(key[0])) { continue; }
          if (!best || key[0] > best.key[0] || (key[0] === best.key[0] && key[1] > best.key[1])) {
            best = { k: k, j: j, key: key, threshold: c.threshold[j], m: m };
          }
        }
        if (best) { found.push(best); }
      });
      if (!found.length) { return null; }
      var keep = nearBest(found.map(function (f) { return f.key[0]; }));
      found = found.filter(function (f, i) { return keep[i]; });
      keep = nearBest(found.map(function (f) { return f.key[1]; }));
      found = found.filter(function (f, i) { return keep[i]; });
      var k = breakTies(run, found.map(function (f) { return f.k; }), [
        function (k) { return run.calibration[k].auc; },
        function (k) { var c = run.calibration[k]; return -(st.pi * c.sq_pos + (1 - st.pi) * c.sq_neg); }]);
      return found.filter(function (f) { return f.k === k; })[0];
    }
    function cell(id, count, rate, dark) {
      var e = $(id);
      e.textContent = "";
      var b = document.createElement("b"); b.textContent = count.toFixed(0);
      e.appendChild(b);
      e.appendChild(document.createTextNode(" (" + fmt(rate) + ")"));
      e.className = dark ? "dark" : "light";
    }
    function read() {
      st.pi = Math.pow(10, +$("ctl-prevalence").value);
      st.cfp = +$("ctl-cost-fp").value;
      st.cfn = +$("ctl-cost-fn").value;
      st.mode = $("ctl-mode").value;
      st.target = +$("ctl-target").value;
    }
    function render() {
      var status = "";
      if (st.mode !== "manual") {
        var s = snap(MAIN, st.mode, st.target);
        if (s) {
          st.k = s.k; st.thr = s.threshold;
          setLambdaSliders(st.k);
          $("ctl-threshold").value = st.thr;
          status = "snapped to lambda " + lamText(MAIN.lambdas[s.k]) + ", threshold " + fmt(s.threshold, 4);
        } else {
          status = "no point of this run meets " + st.mode + " >= " + fmt(st.target) + " with at least " + D.min_tp +
            " validation true positives; the sliders stay where they were";
        }
      }
      setText("snap-status", status);
      showLambdaSliders(st.k);
      setText("ctl-threshold-value", fmt(st.thr, 4));
      setText("ctl-prevalence-value", fmt(st.pi, 4));
      setText("ctl-cost-fp-value", fmt(st.cfp, 2));
      setText("ctl-cost-fn-value", fmt(st.cfn, 2));
      setText("ctl-target-value", fmt(st.target));
      var p = pointAt(MAIN, st.k, st.thr), m = measures(MAIN, p.tp, p.fp);
      setText("point-desc", MAIN.name + " (" + MAIN.kind + ") at lambda " + lamText(MAIN.lambdas[st.k]) + ", threshold " +
        (p.threshold === null ? "above every validation score: nothing predicted positive" : fmt(p.threshold, 4) +
          " (the validation score the slider's " + fmt(st.thr, 4) + " lands on)") + "; prevalence " + fmt(st.pi, 4) +
        ", costs FP " + fmt(st.cfp, 2) + " / FN " + fmt(st.cfn, 2) + ".");
      var shade = function (v) { return v > 5000; };
      cell("cm-tp", m.per10k.tp, m.tpr, shade(m.per10k.tp));
      cell("cm-fn", m.per10k.fn, 1 - m.tpr, shade(m.per10k.fn));
      cell("cm-fp", m.per10k.fp, m.fpr, shade(m.per10k.fp));
      cell("cm-tn", m.per10k.tn, 1 - m.fpr, shade(m.per10k.tn));
      setText("val-precision", fmt(m.precision));
      setText("val-recall", fmt(m.recall));
      setText("val-f1", fmt(m.f1));
      setText("val-fpr", fmt(m.fpr));
      setText("val-cost", fmt(m.cost, 4));
      setText("val-counts", [m.tp, m.fp, m.tp === undefined ? "-" : m.fn, m.tn].join(", ") + " of " + MAIN.n_pos +
        " positives / " + MAIN.n_neg + " negatives");
      var cal = MAIN.calibration[st.k];
      var rel = reliability(cal.bins, MAIN);
      var brier = def(cal.sq_pos) && def(cal.sq_neg) ? st.pi * cal.sq_pos + (1 - st.pi) * cal.sq_neg : NaN;
      setText("val-calibration", fmt(brier, 4) + ", " + fmt(rel.ece, 4));
      setText("val-ranking", fmt(cal.auc) + ", " + fmt(cal.ap) + " (AP at prevalence " + fmt(D.prevalence, 4) + ")");
      /* other runs: at the same target (manual mode: the current recall) */
      var metric = st.mode === "precision" ? "precision" : "recall";
      var target = st.mode === "manual" ? m.recall : st.target;
      var others = D.runs.slice(1).map(function (run) { return { run: run, s: snap(run, metric, target) }; });
      setText("cmp-note", (st.mode === "manual" ? "Each other run at its best point with recall >= this point's recall (" +
        fmt(target) + ")" : "Each run at its best point with " + metric + " >= " + fmt(target)) +
        ", chosen on its own validation split like the main run (at least " + D.min_tp + " true positives).");
      var rows = "<tr><th>run</th><th>lambda</th><th>threshold</th><th>precision</th><th>recall</th><th>F1</th>" +
        "<th>cost per case</th><th>TP per 10,000</th><th>FP per 10,000</th></tr>";
      rows += cmpRow("cmp-0", MAIN.name + " (this setting)", MAIN.lambdas[st.k], p.threshold, m);
      others.forEach(function (o, i) {
        if (o.s) { rows += cmpRow("cmp-" + (i + 1), o.run.name + " (" + o.run.kind + ")", o.run.lambdas[o.s.k], o.s.threshold, o.s.m); }
        else { rows += "<tr id=\"cmp-" + (i + 1) + "\"><td>" + esc(o.run.name) + "</td><td colspan=\"8\">no point meets it</td></tr>"; }
      });
      $("cmp").innerHTML = rows;
      drawCurves(m, p, others);
      drawCalibration(rel);
    }
    function cmpRow(id, name, lam, thr, m) {
      return "<tr id=\"" + id + "\"><td>" + esc(name) + "</td><td>" + esc(lamText(lam)) + "</td><td>" + fmt(thr, 4) +
        "</td><td class=\"precision\">" + fmt(m.precision) + "</td><td class=\"recall\">" + fmt(m.recall) +
        "</td><td class=\"f1\">" + fmt(m.f1) + "</td><td class=\"cost\">" + fmt(m.cost, 4) + "</td><td>" +
        m.per10k.tp.toFixed(0) + "</td><td>" + m.per10k.fp.toFixed(0) + "</td></tr>";
    }
    function reliability(bins, run) {
      var wp = run.n_pos ? st.pi / run.n_pos : 0, wn = run.n_neg ? (1 - st.pi) / run.n_neg : 0;
      var xs = [], ys = [], ws = [], total = 0;
      bins.forEach(function (b) {
        var w = wp * b[2] + wn * b[4];
        if (w <= 0) { return; }
        xs.push((wp * b[1] + wn * b[3]) / w); ys.push(wp * b[2] / w); ws.push(w); total += w;
      });
      var ece = 0;
      for (var i = 0; i < xs.length; i++) { ece += ws[i] * Math.abs(ys[i] - xs[i]); }
      return { xs: xs, ys: ys, ws: ws, ece: total > 0 ? ece / total : NaN };
    }
    function curvePoints(run, k, f) {
      var c = run.curves[k], out = [];
      for (var j = 0; j < c.threshold.length; j++) { out.push(f(measures(run, c.tp[j], c.fp[j]))); }
      return out;
    }
    function cardPoints(run) {
      return run.card.filter(function (cp) { return cp.threshold !== null && cp.threshold !== undefined; }).map(function (cp) {
        var k = run.lambdas.findIndex(function (l) { return sameLambda(l, cp.lambda || {}); });
        if (k < 0) { k = run.lambda_names.length ? -1 : 0; }
        var q = k < 0 ? null : pointAt(run, k, cp.threshold);
        return { cp: cp, m: q ? measures(run, q.tp, q.fp) : null };
      });
    }
    function drawCurves(m, p, others) {
      [["pr-svg", "recall", "precision at the prevalence", "Precision-recall (validation)",
        function (v) { return [v.recall, v.precision]; }],
       ["roc-svg", "false positive rate", "true positive rate", "ROC (validation)",
        function (v) { return [v.fpr, v.tpr]; }]].forEach(function (spec) {
        var svg = $(spec[0]);
        var box = { l: 40, t: 18, w: 180, h: 240 };
        var A = axes(svg, box, [0, 1], [0, 1], spec[1], spec[2], spec[3]);
        var map = function (xy) { return [A.X(xy[0]), A.Y(xy[1])]; };
        var items = [];
        others.forEach(function (o, i) {
          var k = o.s ? o.s.k : 0;
          polyline(svg, curvePoints(o.run, k, spec[4]).map(map), { stroke: COLORS[(i + 1) % COLORS.length], "stroke-dasharray": "4 3", "stroke-width": 1.2 });
          items.push({ color: COLORS[(i + 1) % COLORS.length], dash: "4 3", label: o.run.name });
        });
        polyline(svg, curvePoints(MAIN, st.k, spec[4]).map(map), { stroke: COLORS[0], "stroke-width": 2 });
        items.unshift({ color: COLORS[0], label: MAIN.name + " " + lamText(MAIN.lambdas[st.k]) });
        others.forEach(function (o, i) {
          if (o.s) { var xy = map(spec[4](o.s.m)); marker(svg, "square", xy[0], xy[1], COLORS[(i + 1) % COLORS.length], o.run.name); }
        });
        cardPoints(MAIN).forEach(function (c) {
          if (!c.m) { return; }
          var xy = map(spec[4](c.m));
          marker(svg, "triangle", xy[0], xy[1], "#ffbf00", "model card point " + c.cp.name + " (lambda " +
            lamText(c.cp.lambda) + ", threshold " + fmt(c.cp.threshold, 4) + "); test: " + ["precision", "recall"].map(function (k) {
              var ci = (c.cp.test_ci95 || {})[k];
              return k + " " + fmt((c.cp.test || {})[k]) + (ci ? " [" + fmt(ci[0]) + ", " + fmt(ci[1]) + "]" : "");
            }).join(", "));
          txt(svg, xy[0] + 6, xy[1] - 6, c.cp.name, { "font-size": 8 });
        });
        var cur = map(spec[4](m));
        marker(svg, "circle", cur[0], cur[1], COLORS[0], "this setting");
        items.push({ shape: "circle", color: COLORS[0], label: "this setting" });
        if (others.length) { items.push({ shape: "square", color: "#ccc", label: "other runs, same target" }); }
        if (MAIN.card.length) { items.push({ shape: "triangle", color: "#ffbf00", label: "model card points" }); }
        if (spec[0] === "roc-svg") { polyline(svg, [[A.X(0), A.Y(0)], [A.X(1), A.Y(1)]], { stroke: "#bbb", "stroke-dasharray": "2 2" }); }
        legend(svg, box.l + box.w + 10, box.t + 10, items);
      });
    }
    function drawCalibration(rel) {
      var svg = $("cal-svg"), box = { l: 40, t: 18, w: 180, h: 240 };
      var A = axes(svg, box, [0, 1], [0, 1], "mean predicted P(positive)", "observed positive rate",
        "Reliability at the prevalence (15 bins)");
      polyline(svg, [[A.X(0), A.Y(0)], [A.X(1), A.Y(1)]], { stroke: "#bbb", "stroke-dasharray": "2 2" });
      polyline(svg, rel.xs.map(function (x, i) { return [A.X(x), A.Y(rel.ys[i])]; }), { stroke: COLORS[0], "stroke-width": 1.5 });
      rel.xs.forEach(function (x, i) { el("circle", { cx: A.X(x), cy: A.Y(rel.ys[i]), r: 2 + 6 * Math.sqrt(rel.ws[i]), fill: COLORS[0], "fill-opacity": 0.5 }, svg); });
      legend(svg, box.l + box.w + 10, box.t + 10, [{ color: COLORS[0], label: "lambda " + lamText(MAIN.lambdas[st.k]) },
        { color: "#bbb", dash: "2 2", label: "perfect calibration" }, { shape: "circle", color: COLORS[0], label: "area: weight share" }]);
    }
    function cardTable() {
      var keys = ["precision", "recall", "f1_at_threshold", "cost"];
      var rows = "<tr><th>point</th><th>lambda</th><th>threshold</th><th>picked at prevalence</th>" + keys.map(function (k) {
        return "<th>" + k + "<br><span class=\"note\">validation / test [95% CI]</span></th>";
      }).join("") + "<th></th></tr>";
      MAIN.card.forEach(function (cp, i) {
        rows += "<tr id=\"card-" + esc(cp.name) + "\"><td>" + esc(cp.name) + "</td><td>" + esc(lamText(cp.lambda)) + "</td><td>" +
          fmt(cp.threshold, 4) + "</td><td>" + fmt(cp.prevalence, 4) + "</td>" + keys.map(cardCell(cp)).join("") + "<td><button type=\"button\" data-card=\"" + i + "\">show</button></td></tr>";
      });
      $("card").innerHTML = MAIN.card.length ? rows : "<tr><td>no points yet: run lossdial pick</td></tr>";
      Array.prototype.forEach.call(document.querySelectorAll("#card button"), function (b) {
        b.addEventListener("click", function () {
          var cp = MAIN.card[+b.getAttribute("data-card")];
          $("ctl-mode").value = "manual";
          if (def(cp.prevalence)) { $("ctl-prevalence").value = Math.log10(cp.prevalence); }
          st.k = nearestLambda(MAIN, cp.lambda || {}); setLambdaSliders(st.k);
          st.thr = cp.threshold; $("ctl-threshold").value = cp.threshold;
          read(); render();
        });
      });
    }
    /* wiring: a lambda or threshold move is a manual setting; the others keep the mode */
    NAMES.forEach(function (n) {
      $("lam-" + n).addEventListener("input", function () { $("ctl-mode").value = "manual"; st.k = lambdaIndexFromSliders(); read(); render(); });
    });
    $("ctl-threshold").addEventListener("input", function () { $("ctl-mode").value = "manual"; st.thr = +$("ctl-threshold").value; read(); render(); });
    ["ctl-prevalence", "ctl-cost-fp", "ctl-cost-fn", "ctl-target"].forEach(function (id) {
      $(id).addEventListener("input", function () { read(); render(); });
    });
    $("ctl-mode").addEventListener("change", function () { read(); render(); });
    cardTable();
    st.k = lambdaIndexFromSliders();
    st.thr = +$("ctl-threshold").value;
    read(); render();
  }

  /* ================================================================ multi-class */
  function multiclass() {
    var C = D.class_names.length, n = D.val_counts, counts = D.train_counts;
    var st = { k: 0, ti: 0, gamma: 1 };
    function row(run, k, ti) { return run.rows[k * run.adjustments.length + ti]; }
    function prior(gamma) {
      var q = counts.map(function (c, i) { return n[i] > 0 ? Math.pow(c, gamma) : 0; });
      var s = q.reduce(function (a, b) { return a + b; }, 0);
      return q.map(function (v) { return v / s; });
    }
    function mean(xs) {
      var d = xs.filter(def);
      return d.length ? d.reduce(function (a, b) { return a + b; }, 0) / d.length : NaN;
    }
    function measures(r) {
      var recall = [];
      for (var c = 0; c < C; c++) {
        var hit = r.confusion ? r.confusion[c][c] : r.correct[c];
        recall.push(n[c] > 0 ? hit / n[c] : NaN);
      }
      var q = prior(st.gamma), acc = 0;
      for (c = 0; c < C; c++) { if (def(recall[c])) { acc += q[c] * recall[c]; } }
      var group = function (g) { return mean(D.shot_groups[g].map(function (c) { return recall[c]; })); };
      var defined = recall.filter(def);
      return { recall: recall, q: q, accuracy: acc, balanced: mean(recall),
        worst: defined.length ? Math.min.apply(null, defined) : NaN,
        many: group("many"), medium: group("medium"), few: group("few") };
    }
    function closestT(run, t) {
      var best = 0;
      run.adjustments.forEach(function (v, i) { if (Math.abs(v - t) < Math.abs(run.adjustments[best] - t) - 1e-12) { best = i; } });
      return best;
    }
    function read() {
      st.ti = +$("ctl-adjustment").value;
      st.gamma = +$("ctl-prior").value;
    }
    function render() {
      var t = MAIN.adjustments[st.ti];
      showLambdaSliders(st.k);
      setText("ctl-adjustment-value", fmt(t, 2));
      setText("ctl-prior-value", "gamma " + fmt(st.gamma, 2));
      var r = row(MAIN, st.k, st.ti), m = measures(r);
      setText("point-desc", MAIN.name + " (" + MAIN.kind + ") at lambda " + lamText(MAIN.lambdas[st.k]) + ", t = " + fmt(t, 2) + ".");
      setText("val-accuracy", fmt(m.accuracy));
      setText("val-balanced", fmt(m.balanced));
      setText("val-worst", fmt(m.worst));
      setText("val-many", fmt(m.many));
      setText("val-medium", fmt(m.medium));
      setText("val-few", fmt(m.few));
      setText("val-calibration", fmt(r.nll, 4) + ", " + fmt(r.ece, 4) + ", " + fmt(r.brier, 4));
      setText("prior-desc", "Deployment prior q (accuracy, counts per 10,000): " + m.q.map(function (v, i) {
        return D.class_names[i] + " " + fmt(v); }).join(", ") + ". The report's own prior (" + D.prior_source +
        ") is that of the calibration numbers and the static figures.");
      var others = D.runs.slice(1).map(function (run) {
        /* another LCT run: the lambda nearest this one (the middle of its grid when this run is a baseline) */
        var k = !run.lambda_names.length ? 0 : NAMES.length ? nearestLambda(run, MAIN.lambdas[st.k]) : run.lambdas.length >> 1;
        var ti = closestT(run, t);
        return { run: run, k: k, ti: ti, m: measures(row(run, k, ti)) };
      });
      drawRecall(m, others);
      drawDial(others);
      confusionTable(r, m);
      var rows = "<tr><th>run</th><th>lambda</th><th>t</th><th>accuracy (prior)</th><th>balanced</th><th>worst</th>" +
        "<th>many</th><th>medium</th><th>few</th></tr>";
      rows += cmpRow("cmp-0", MAIN.name + " (this setting)", MAIN.lambdas[st.k], t, m);
      others.forEach(function (o, i) { rows += cmpRow("cmp-" + (i + 1), o.run.name + " (" + o.run.kind + ")", o.run.lambdas[o.k], o.run.adjustments[o.ti], o.m); });
      $("cmp").innerHTML = rows;
    }
    function cmpRow(id, name, lam, t, m) {
      return "<tr id=\"" + id + "\"><td>" + esc(name) + "</td><td>" + esc(lamText(lam)) + "</td><td>" + fmt(t, 2) +
        "</td><td class=\"accuracy\">" + fmt(m.accuracy) + "</td><td class=\"balanced\">" + fmt(m.balanced) +
        "</td><td>" + fmt(m.worst) + "</td><td class=\"many\">" + fmt(m.many) + "</td><td class=\"medium\">" +
        fmt(m.medium) + "</td><td class=\"few\">" + fmt(m.few) + "</td></tr>";
    }
    function groupOf(c) {
      return D.shot_groups.many.indexOf(c) >= 0 ? "many" : D.shot_groups.few.indexOf(c) >= 0 ? "few" : "medium";
    }
    var GROUP_COLOR = { many: "#1f77b4", medium: "#ff7f0e", few: "#d62728" };
    function drawRecall(m, others) {
      var svg = $("recall-svg"), box = { l: 40, t: 18, w: 360, h: 190 };
      var A = axes(svg, box, [0, C], [0, 1], "class (training count)", "validation recall", "Per-class recall", true);
      var bw = box.w / C;
      for (var c = 0; c < C; c++) {
        var v = m.recall[c];
        if (def(v)) {
          var b = el("rect", { x: A.X(c) + bw * 0.15, y: A.Y(v), width: bw * 0.7, height: A.Y(0) - A.Y(v), fill: GROUP_COLOR[groupOf(c)] }, svg);
          el("title", {}, b).textContent = D.class_names[c] + ": " + fmt(v);
        }
        if (C <= 30) {
          txt(svg, A.X(c + 0.5), box.t + box.h + 11, D.class_names[c], { "text-anchor": "middle", "font-size": 8 });
          txt(svg, A.X(c + 0.5), box.t + box.h + 20, "(" + counts[c] + ")", { "text-anchor": "middle", "font-size": 7 });
        }
        others.forEach(function (o, i) {
          var ov = o.m.recall[c];
          if (def(ov)) { marker(svg, "square", A.X(c + 0.5), A.Y(ov), COLORS[(i + 1) % COLORS.length], o.run.name + " " + D.class_names[c] + ": " + fmt(ov)); }
        });
      }
      var items = ["many", "medium", "few"].filter(function (g) { return D.shot_groups[g].length; }).map(function (g) {
        return { color: GROUP_COLOR[g], label: g + "-shot class" };
      });
      others.forEach(function (o, i) { items.push({ shape: "square", color: COLORS[(i + 1) % COLORS.length], label: o.run.name + " (same t)" }); });
      legend(svg, box.l + box.w + 10, box.t + 10, items);
    }
    function drawDial(others) {
      var svg = $("dial-svg"), box = { l: 40, t: 18, w: 360, h: 190 }, ts = MAIN.adjustments;
      var A = axes(svg, box, [ts[0], ts[ts.length - 1] > ts[0] ? ts[ts.length - 1] : ts[0] + 1], [0, 1],
        "adjustment t", "validation accuracy", "The dial at lambda " + lamText(MAIN.lambdas[st.k]));
      var series = [["balanced", "#000"], ["many", GROUP_COLOR.many], ["medium", GROUP_COLOR.medium], ["few", GROUP_COLOR.few]]
        .filter(function (s) { return s[0] === "balanced" || D.shot_groups[s[0]].length; });
      var items = [];
      series.forEach(function (s) {
        var pts = ts.map(function (t, ti) { return [A.X(t), A.Y(measures(row(MAIN, st.k, ti))[s[0]])]; });
        polyline(svg, pts, { stroke: s[1], "stroke-width": s[0] === "balanced" ? 2 : 1.4 });
        items.push({ color: s[1], label: s[0] === "balanced" ? "balanced accuracy" : s[0] + "-shot accuracy" });
      });
      others.forEach(function (o, i) {
        var pts = o.run.adjustments.map(function (t, ti) { return [A.X(t), A.Y(measures(row(o.run, o.k, ti)).balanced)]; });
        polyline(svg, pts, { stroke: COLORS[(i + 1) % COLORS.length], "stroke-dasharray": "4 3" });
        items.push({ color: COLORS[(i + 1) % COLORS.length], dash: "4 3", label: o.run.name + " balanced" });
      });
      var t = ts[st.ti];
      el("line", { x1: A.X(t), x2: A.X(t), y1: box.t, y2: box.t + box.h, stroke: COLORS[0], "stroke-dasharray": "3 2" }, svg);
      items.push({ color: COLORS[0], dash: "3 2", label: "this t" });
      MAIN.card.forEach(function (cp) {
        if (!def(cp.adjustment) || !sameLambda(cp.lambda || {}, MAIN.lambdas[st.k])) { return; }
        var v = (cp.val || {}).balanced_accuracy;
        marker(svg, "triangle", A.X(cp.adjustment), A.Y(v), "#ffbf00", "model card point " + cp.name);
      });
      if (MAIN.card.length) { items.push({ shape: "triangle", color: "#ffbf00", label: "card point (val)" }); }
      legend(svg, box.l + box.w + 10, box.t + 10, items);
      drawDialLambda(series);
    }
    /* the dial against lambda at the current t (one name: its values; several: the grid index) */
    function drawDialLambda(series) {
      var svg = $("dial-lam-svg");
      if (!NAMES.length) { svg.style.display = "none"; return; }
      var one = NAMES.length === 1, K = MAIN.lambdas.length;
      var xs = MAIN.lambdas.map(function (l, k) { return one ? l[NAMES[0]] : k; });
      var order = xs.map(function (x, k) { return k; }).sort(function (a, b) { return xs[a] - xs[b]; });
      var lo = Math.min.apply(null, xs), hi = Math.max.apply(null, xs);
      var box = { l: 40, t: 18, w: 360, h: 190 };
      var A = axes(svg, box, [lo, hi > lo ? hi : lo + 1], [0, 1], one ? "lambda " + NAMES[0] : "lambda (grid index)",
        "validation accuracy", "The dial at t = " + fmt(MAIN.adjustments[st.ti], 2));
      var items = [];
      series.forEach(function (s) {
        polyline(svg, order.map(function (k) { return [A.X(xs[k]), A.Y(measures(row(MAIN, k, st.ti))[s[0]])]; }),
          { stroke: s[1], "stroke-width": s[0] === "balanced" ? 2 : 1.4 });
        items.push({ color: s[1], label: s[0] === "balanced" ? "balanced accuracy" : s[0] + "-shot accuracy" });
      });
      var x = xs[st.k];
      el("line", { x1: A.X(x), x2: A.X(x), y1: box.t, y2: box.t + box.h, stroke: COLORS[0], "stroke-dasharray": "3 2" }, svg);
      items.push({ color: COLORS[0], dash: "3 2", label: "this lambda" });
      legend(svg, box.l + box.w + 10, box.t + 10, items);
      if (K < 2) { txt(svg, box.l + 10, box.t + 20, "one lambda only", {}); }
    }
    function confusionTable(r, m) {
      var t = $("cm");
      if (!r.confusion) { t.innerHTML = "<caption>More than 30 classes: per-class recall only (the figure above).</caption>"; return; }
      var h = "<caption>Confusion matrix at this setting: rows are true classes; each cell the fraction of its true class " +
        "(bold) and the cases per 10,000 at the deployment prior</caption><tr><th>true \\ predicted</th>" +
        D.class_names.map(function (c) { return "<th>" + esc(c) + "</th>"; }).join("") + "</tr>";
      for (var i = 0; i < C; i++) {
        h += "<tr><th>" + esc(D.class_names[i]) + "</th>";
        for (var j = 0; j < C; j++) {
          var rate = n[i] > 0 ? r.confusion[i][j] / n[i] : NaN;
          var per = def(rate) ? 1e4 * m.q[i] * rate : NaN;
          var bg = def(rate) ? "rgba(31,119,180," + rate.toFixed(3) + ")" : "#fff";
          h += "<td id=\"cm-" + i + "-" + j + "\" style=\"background:" + bg + ";color:" + (rate > 0.55 ? "#fff" : "#000") +
            "\"><b>" + fmt(rate, 2) + "</b><br><span class=\"per\">" + (def(per) ? per.toFixed(0) : "-") + "</span></td>";
        }
        h += "</tr>";
      }
      t.innerHTML = h;
    }
    function cardTable() {
      var keys = ["balanced_accuracy", "accuracy", "many_shot_accuracy", "medium_shot_accuracy", "few_shot_accuracy"];
      var rows = "<tr><th>point</th><th>lambda</th><th>t</th>" + keys.map(function (k) {
        return "<th>" + k + "<br><span class=\"note\">validation / test [95% CI]</span></th>";
      }).join("") + "<th></th></tr>";
      MAIN.card.forEach(function (cp, i) {
        rows += "<tr id=\"card-" + esc(cp.name) + "\"><td>" + esc(cp.name) + "</td><td>" + esc(lamText(cp.lambda)) + "</td><td>" +
          fmt(cp.adjustment, 2) + "</td>" + keys.map(cardCell(cp)).join("") + "<td><button type=\"button\" data-card=\"" + i + "\">show</button></td></tr>";
      });
      $("card").innerHTML = MAIN.card.length ? rows : "<tr><td>no points yet: run lossdial pick</td></tr>";
      Array.prototype.forEach.call(document.querySelectorAll("#card button"), function (b) {
        b.addEventListener("click", function () {
          var cp = MAIN.card[+b.getAttribute("data-card")];
          st.k = nearestLambda(MAIN, cp.lambda || {}); setLambdaSliders(st.k);
          $("ctl-adjustment").value = closestT(MAIN, cp.adjustment);
          read(); render();
        });
      });
    }
    NAMES.forEach(function (nm) {
      $("lam-" + nm).addEventListener("input", function () { st.k = lambdaIndexFromSliders(); read(); render(); });
    });
    ["ctl-adjustment", "ctl-prior"].forEach(function (id) { $(id).addEventListener("input", function () { read(); render(); }); });
    cardTable();
    st.k = lambdaIndexFromSliders();
    read(); render();
  }
})();
