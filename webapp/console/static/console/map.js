/* The device map (Leaflet 1.9.4 + Leaflet.markercluster 1.5.3, vendored under vendor/).

   Reusable module: window.TLMap.mount(element, options) draws a map of devices in `element`
   and returns a handle. A page using it loads, in this order:
     vendor/leaflet/leaflet.css, vendor/leaflet.markercluster/MarkerCluster.css,
     vendor/leaflet.markercluster/MarkerCluster.Default.css (in <head>), then
     vendor/leaflet/leaflet.js, vendor/leaflet.markercluster/leaflet.markercluster.js,
     console/map.js.

   options (each may also come from the element's data-* attribute, shown in brackets):
     url          the devices' JSON [data-url], e.g. "/map/devices.json?product=thermo-a"
                  (`console:map-devices`); it answers
                  {"devices": [{"id", "name", "product", "product_name", "status",
                                "lat", "lon", "last_seen", "url", "detail"}, …],
                   "count", "truncated", "limit"}
     popups       true (default): a popup per marker with name, identifier, product, status,
                  last seen, a link to the device page, and its latest values (read from the
                  marker's `detail` URL when the popup opens) [data-popups="false" turns off]
     cluster      true (default): markers clustered (Leaflet.markercluster) [data-cluster]
     tileUrl      base tiles, e.g. "https://{s}.tile.openstreetmap.org/{z}/{x}/{y}.png";
                  empty: no tile layer, a plain background [data-tile-url]
     attribution  the tiles' attribution (HTML from the platform's settings) [data-attribution]
     maxZoom      18 by default [data-max-zoom]
     labels       translated words (see LABELS below); or [data-labels="<id of a json_script>"]
     fit          "first" (default: fit to the markers on the first load and after setUrl),
                  "always" (after every load) or "never"
     onLoad(data), onError(status)   called after each load (status 0: network error,
                  401: signed out, 403: no permission, other: the server's status)

   handle: {map (the Leaflet map), reload() → Promise of the data (keeps the markers shown when
   it fails), setUrl(url) (reload with another query, fits again), data (the last answer),
   destroy()}.

   Names and every other device text are set with textContent, never parsed as HTML.
   Elements with `data-tlmap-auto` are mounted on load (the /map/ page). */
(function () {
  "use strict";

  var STATUSES = ["online", "offline", "unconnected"];
  var LABELS = {
    online: "Online", offline: "Offline", unconnected: "Never connected",
    identifier: "Identifier", product: "Product", status: "Status", lastSeen: "Last seen",
    never: "never", open: "Open the device page", values: "Latest values",
    noValues: "No values reported yet.", loading: "Loading…", failed: "Could not load the data.",
    noTiles: "", devices: "{count} devices"
  };

  function option(element, options, name, attribute, fallback) {
    if (options[name] !== undefined && options[name] !== null) { return options[name]; }
    var value = element.getAttribute("data-" + attribute);
    return value === null ? fallback : value;
  }

  function flag(value) { return !(value === false || value === "false" || value === "0"); }

  function readLabels(element, options) {
    var labels = {};
    Object.keys(LABELS).forEach(function (k) { labels[k] = LABELS[k]; });
    var id = element.getAttribute("data-labels");
    var node = id && document.getElementById(id);
    var given = options.labels || (node ? JSON.parse(node.textContent) : {});
    Object.keys(given).forEach(function (k) { labels[k] = given[k]; });
    return labels;
  }

  function node(tag, className, text) {
    var n = document.createElement(tag);
    if (className) { n.className = className; }
    if (text !== undefined && text !== null) { n.textContent = String(text); }
    return n;
  }

  function when(iso) {
    if (!iso) { return ""; }
    var d = new Date(typeof iso === "number" ? iso : String(iso));
    if (isNaN(d.getTime())) { return String(iso); }
    return d.toLocaleString(document.documentElement.lang || undefined);
  }

  function statusOf(device) {
    return STATUSES.indexOf(device.status) >= 0 ? device.status : "unconnected";
  }

  function getJSON(url) {
    return fetch(url, {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (response) {
        if (!response.ok) { var e = new Error("HTTP " + response.status);
          e.status = response.status; throw e; }
        return response.json();
      }, function () { var e = new Error("network"); e.status = 0; throw e; });
  }

  function mount(element, options) {
    options = options || {};
    if (!window.L) { throw new Error("TLMap: load vendor/leaflet/leaflet.js first"); }
    var L = window.L;
    var labels = readLabels(element, options);
    var url = option(element, options, "url", "url", "");
    var popups = flag(option(element, options, "popups", "popups", true));
    var clustered = flag(option(element, options, "cluster", "cluster", true)) &&
      typeof L.markerClusterGroup === "function";
    var tileUrl = option(element, options, "tileUrl", "tile-url", "");
    var attribution = option(element, options, "attribution", "attribution", "");
    var maxZoom = parseInt(option(element, options, "maxZoom", "max-zoom", 18), 10) || 18;
    var fit = options.fit || element.getAttribute("data-fit") || "first";
    var fitNext = fit !== "never";

    element.classList.add("tl-map");
    var map = L.map(element, {maxZoom: maxZoom, worldCopyJump: true, zoomControl: true});
    map.setView([20, 0], 2);
    if (tileUrl) {
      L.tileLayer(tileUrl, {maxZoom: maxZoom, attribution: attribution}).addTo(map);
    } else {
      element.classList.add("tl-map-plain");
      if (labels.noTiles) {
        var Note = L.Control.extend({
          options: {position: "bottomleft"},
          onAdd: function () { return node("div", "tl-map-note", labels.noTiles); }
        });
        map.addControl(new Note());
      }
    }

    var layer = clustered ? L.markerClusterGroup({
      showCoverageOnHover: false, maxClusterRadius: 50, chunkedLoading: true,
      iconCreateFunction: function (cluster) {
        var children = cluster.getAllChildMarkers();
        var online = 0;
        children.forEach(function (m) { if (m.options.tlStatus === "online") { online++; } });
        var kind = online === children.length ? "online" : (online ? "mixed" : "offline");
        return L.divIcon({html: "<span>" + children.length + "</span>", iconSize: [40, 40],
                          className: "tl-cluster tl-cluster-" + kind});
      }
    }) : L.layerGroup();
    layer.addTo(map);

    function popupContent(device) {
      var box = node("div", "tl-popup");
      box.setAttribute("data-device", device.id);
      box.appendChild(node("strong", "tl-popup-name", device.name || device.id));
      var facts = node("dl", "tl-popup-facts");
      function fact(label, value, className) {
        facts.appendChild(node("dt", null, label));
        var dd = node("dd", className || null, value);
        facts.appendChild(dd);
        return dd;
      }
      fact(labels.identifier, device.id);
      fact(labels.product, device.product_name || device.product);
      var status = statusOf(device);
      fact(labels.status, labels[status], "tl-status tl-status-" + status);
      fact(labels.lastSeen, device.last_seen ? when(device.last_seen) : labels.never);
      box.appendChild(facts);
      var values = node("div", "tl-popup-values");
      values.appendChild(node("div", "tl-popup-heading", labels.values));
      var body = node("p", "muted", labels.loading);
      values.appendChild(body);
      box.appendChild(values);
      if (device.url) {
        var link = node("a", "tl-popup-link", labels.open);
        link.href = device.url;
        box.appendChild(link);
      }
      return {box: box, values: values, body: body};
    }

    function fillValues(parts, answer) {
      var rows = (answer && answer.values) || [];
      if (!rows.length) { parts.body.textContent = labels.noValues; return; }
      var table = node("table", "tl-popup-table");
      rows.forEach(function (row) {
        var tr = node("tr");
        tr.appendChild(node("th", null, row.name || row.code));
        var td = node("td");
        td.appendChild(node("span", "tl-value", row.value));
        if (row.unit) { td.appendChild(node("span", "tl-unit", " " + row.unit)); }
        if (row.ts) { td.title = when(row.ts); }
        tr.appendChild(td);
        table.appendChild(tr);
      });
      parts.values.replaceChild(table, parts.body);
    }

    function iconFor(status) {
      return L.divIcon({className: "tl-marker tl-marker-" + status, iconSize: [16, 16]});
    }

    function markerFor(device) {
      var status = statusOf(device);
      var marker = L.marker([device.lat, device.lon], {
        icon: iconFor(status),
        title: (device.name ? device.name + " · " : "") + device.id,
        alt: device.id, keyboard: true, tlStatus: status, tlDevice: device.id, tlData: device
      });
      if (popups) {
        // Leaflet calls this again on popup.update(): the open popup keeps its one box.
        var parts = null;
        marker.on("popupclose", function () { parts = null; });
        marker.bindPopup(function () {
          if (parts) { return parts.box; }
          device = marker.options.tlData;  // the newest answer's record
          parts = popupContent(device);
          var shown = parts;
          if (device.detail) {
            getJSON(device.detail).then(function (answer) {
              fillValues(shown, answer);
              if (marker.isPopupOpen()) { marker.getPopup().update(); }
            }, function () { shown.body.textContent = labels.failed; });
          } else {
            shown.values.remove();
          }
          return shown.box;
        }, {minWidth: 220, maxWidth: 360});
      }
      return marker;
    }

    var handle = {map: map, data: null, url: url, markers: {}};

    /* Markers are updated in place: a device still listed keeps its marker (moved, and
       recoloured when its connection changed), so an open popup stays open and the view
       (zoom, centre) is left alone unless `fit` asks for it. */
    function draw(data) {
      var seen = {};
      var added = [];
      var recoloured = [];
      var markers = (data.devices || []).filter(function (d) {
        return isFinite(d.lat) && isFinite(d.lon);
      }).map(function (d) {
        seen[d.id] = true;
        var m = handle.markers[d.id];
        if (!m) {
          m = markerFor(d);
          handle.markers[d.id] = m;
          added.push(m);
          return m;
        }
        var before = m.options.tlData;
        m.options.tlData = d;
        if (before.lat !== d.lat || before.lon !== d.lon) { m.setLatLng([d.lat, d.lon]); }
        var status = statusOf(d);
        if (m.options.tlStatus !== status) {
          m.options.tlStatus = status;
          m.setIcon(iconFor(status));
          recoloured.push(m);
        }
        return m;
      });
      var gone = Object.keys(handle.markers).filter(function (id) { return !seen[id]; })
        .map(function (id) { var m = handle.markers[id]; delete handle.markers[id]; return m; });
      if (clustered) {
        if (gone.length) { layer.removeLayers(gone); }
        if (added.length) { layer.addLayers(added); }
        if (recoloured.length) { layer.refreshClusters(recoloured); }
      } else {
        gone.forEach(function (m) { layer.removeLayer(m); });
        added.forEach(function (m) { layer.addLayer(m); });
      }
      if ((fitNext || fit === "always") && markers.length) {
        var bounds = L.latLngBounds(markers.map(function (m) { return m.getLatLng(); }));
        map.fitBounds(bounds.pad(0.15), {maxZoom: Math.min(12, maxZoom), animate: false});
      }
      fitNext = false;
    }

    handle.reload = function () {
      if (!handle.url) { return Promise.resolve(null); }
      return getJSON(handle.url).then(function (data) {
        handle.data = data;
        draw(data);
        if (options.onLoad) { options.onLoad(data); }
        return data;
      }, function (error) {
        if (options.onError) { options.onError(error.status || 0); }
        throw error;
      });
    };
    handle.setUrl = function (next) {
      handle.url = next;
      if (fit !== "never") { fitNext = true; }
      return handle.reload();
    };
    handle.invalidate = function () { map.invalidateSize(); };
    handle.destroy = function () { map.remove(); element.classList.remove("tl-map", "tl-map-plain"); };

    handle.reload().catch(function () { /* reported through onError */ });
    return handle;
  }

  window.TLMap = {mount: mount, version: 1};

  /* The /map/ page: the element marked data-tlmap-auto, with its count and cap notice. */
  function autoMount() {
    var element = document.querySelector("[data-tlmap-auto]");
    if (!element) { return; }
    var count = document.querySelector("[data-map-count]");
    var notice = document.querySelector("[data-map-notice]");
    var failed = document.querySelector("[data-map-failed]");
    var labels = readLabels(element, {});
    var page = window.TLMap.page = mount(element, {
      onLoad: function (data) {
        if (failed) { failed.hidden = true; }
        if (count) { count.textContent = data.count_text || labels.devices.replace("{count}", data.count); }
        if (notice) { notice.hidden = !data.truncated; }
        element.setAttribute("data-loaded", String(data.count));
      },
      onError: function (status) {
        if (failed) { failed.hidden = false; }
        if (status === 401 || status === 403) { stop(); }  // signed out: no more polling
      }
    });
    // Markers refresh every data-refresh seconds (30) while the tab is visible; a hidden
    // tab stops polling, and showing it again reloads at once.
    var every = Math.max(5, parseInt(element.getAttribute("data-refresh") || "30", 10) || 30);
    var timer = null;
    var ended = false;
    function tick() { page.reload().catch(function () { /* shown through onError */ }); }
    function start() {
      if (!timer && !ended) { timer = window.setInterval(tick, every * 1000); }
      element.setAttribute("data-refresh-state", ended ? "stopped" : "on");
    }
    function stop(pauseOnly) {
      if (timer) { window.clearInterval(timer); timer = null; }
      if (pauseOnly !== false) { ended = true; }
      element.setAttribute("data-refresh-state", ended ? "stopped" : "paused");
    }
    document.addEventListener("visibilitychange", function () {
      if (document.visibilityState === "hidden") { stop(false); return; }
      if (!ended) { tick(); start(); }
    });
    if (document.visibilityState !== "hidden") { start(); }
    element.setAttribute("data-refresh-every", String(every));
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", autoMount);
  } else {
    autoMount();
  }
})();
