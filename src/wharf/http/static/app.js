// The Wharf dashboard: a few pages over the JSON API, refreshed every two seconds.
// Each page has mount() (static skeleton and forms, built once) and refresh() (data only), so
// polling never clobbers what the user is typing.
"use strict";

const REFRESH_MS = 2000;
const $ = (sel, root = document) => root.querySelector(sel);

function esc(value) {
  return String(value ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}
function num(v) {
  if (typeof v !== "number") return esc(v);
  return v.toLocaleString("en-US", { maximumFractionDigits: Number.isInteger(v) ? 0 : 1 });
}
function bytes(v) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return (i ? v.toFixed(1) : String(v)) + " " + units[i];
}
function enc(s) { return encodeURIComponent(s); }

async function api(method, path, body) {
  const init = { method, headers: {} };
  if (body !== undefined) { init.body = JSON.stringify(body); init.headers["Content-Type"] = "application/json"; }
  const resp = await fetch(path, init);
  const text = await resp.text();
  const data = text ? JSON.parse(text) : null;
  if (!resp.ok) throw Object.assign(new Error((data && data.error) || resp.statusText), { status: resp.status });
  return data;
}

function notice(message, isError) {
  const el = $("#notice");
  el.textContent = message;
  el.className = "notice" + (isError ? " error" : "");
  el.hidden = false;
  clearTimeout(notice.timer);
  notice.timer = setTimeout(() => { el.hidden = true; }, 4000);
}

async function act(label, fn) {
  try { await fn(); notice(label); await current.refresh(); } catch (err) { notice(err.message, true); }
}

function table(columns, rows, empty = "none") {
  const head = columns.map((c) => `<th class="${c.num ? "num" : ""}">${esc(c.title)}</th>`).join("");
  const body = rows.length
    ? rows.map((r) => "<tr>" + columns.map((c) => `<td class="${c.num ? "num" : ""}">${c.html(r)}</td>`).join("") + "</tr>").join("")
    : `<tr><td class="empty" colspan="${columns.length}">${esc(empty)}</td></tr>`;
  return `<table><thead><tr>${head}</tr></thead><tbody>${body}</tbody></table>`;
}

function formValues(form) {
  return Object.fromEntries(new FormData(form).entries());
}

// ---- pages -------------------------------------------------------------------------------

const overviewPage = {
  mount(root) {
    root.innerHTML = `
      <div class="cards" id="cards"></div>
      <div class="panel"><div class="legend"><span><i style="background:var(--publish)"></i>published/s</span>
        <span><i style="background:var(--deliver)"></i>delivered/s</span></div>
        <canvas class="chart" id="rate-chart"></canvas></div>
      <div class="panel"><div class="legend"><span><i style="background:var(--lag)"></i>consumer lag (messages)</span></div>
        <canvas class="chart" id="lag-chart"></canvas></div>
      <h2>Listeners</h2><div id="listeners"></div>
      <div id="cluster"></div>`;
    this.rateChart = new WharfChart($("#rate-chart"), [{ name: "published", color: "#1f6feb" }, { name: "delivered", color: "#2da44e" }]);
    this.lagChart = new WharfChart($("#lag-chart"), [{ name: "lag", color: "#d4760a" }], { integer: true });
  },
  async refresh() {
    const [ov, history, cluster] = await Promise.all([
      api("GET", "/api/overview"), api("GET", "/api/history"), api("GET", "/api/cluster"),
    ]);
    const t = ov.totals, r = ov.rates;
    const cards = [
      ["Published/s", r.publish_per_s], ["Delivered/s", r.deliver_per_s], ["Consumer lag", t.consumer_lag],
      ["Topics", t.topics], ["Partitions", t.partitions], ["Groups", t.groups], ["Queues", t.queues],
      ["Queued messages", t.queue_depth], ["Connections", t.connections], ["Storage", bytes(t.storage_bytes)],
      ["Uptime", Math.round(ov.uptime_s) + " s"], ["Version", ov.version],
    ];
    $("#cards").innerHTML = cards.map(([l, v]) => `<div class="card"><div class="value">${num(v)}</div><div class="label">${esc(l)}</div></div>`).join("");
    for (const s of history.samples) {
      this.rateChart.push(s.time_ms, [s.publish_per_s, s.deliver_per_s]);
      this.lagChart.push(s.time_ms, [s.consumer_lag]);
    }
    this.rateChart.draw();
    this.lagChart.draw();
    $("#listeners").innerHTML = table([
      { title: "Listener", html: (l) => esc(l.name) }, { title: "Address", html: (l) => esc(l.host + ":" + l.port) },
      { title: "Ready", html: (l) => (l.ready ? "yes" : "no") },
    ], ov.listeners, "no listeners reported");
    $("#cluster").innerHTML = cluster.mode === "cluster" ? clusterTable(cluster) : "";
  },
};

// The nodes of a cluster (GET /api/cluster); nothing in single-node mode.
function clusterTable(cluster) {
  const time = (ms) => esc(new Date(ms).toLocaleTimeString());
  const listeners = (n) => esc(Object.entries(n.listeners).map(([k, v]) => `${k}=${v}`).join(" "));
  return `<h2>Cluster ${esc(cluster.cluster_id)}</h2>` + table([
    { title: "Node", html: (n) => esc(n.node_id) + (n.this_node ? " (this node)" : "") },
    { title: "Broker id", num: true, html: (n) => esc(n.broker_id ?? "") },
    { title: "Host", html: (n) => esc(n.host) }, { title: "Listeners", html: listeners },
    { title: "Live", html: (n) => (n.live ? "yes" : "no") },
    { title: "Started", html: (n) => time(n.started_at_ms) },
    { title: "Last heartbeat", html: (n) => time(n.last_heartbeat_ms) },
    { title: "Lease expires", html: (n) => time(n.lease_expires_at_ms) },
  ], cluster.nodes, "no nodes registered");
}

const topicsPage = {
  mount(root) {
    root.innerHTML = `
      <h2>Topics</h2>
      <form class="inline" id="create-topic"><input name="name" placeholder="topic name" required>
        <input name="partitions" type="number" min="1" value="1" title="partitions">
        <button class="primary">Create topic</button></form>
      <div id="topics"></div>`;
    $("#create-topic").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const v = formValues(ev.target);
      act(`topic ${v.name} created`, () => api("POST", "/api/topics", { name: v.name, partitions: Number(v.partitions) }));
      ev.target.reset();
    });
  },
  async refresh() {
    const topics = await api("GET", "/api/topics");
    $("#topics").innerHTML = table([
      { title: "Name", html: (t) => `<a href="#/topics/${enc(t.name)}">${esc(t.name)}</a>` },
      { title: "Partitions", num: true, html: (t) => num(t.partition_count) },
      { title: "Messages", num: true, html: (t) => num(t.messages) },
      { title: "Size", num: true, html: (t) => bytes(t.bytes) },
      { title: "", html: (t) => `<button class="danger" data-delete-topic="${esc(t.name)}">Delete</button>` },
    ], topics, "no topics");
    document.querySelectorAll("[data-delete-topic]").forEach((b) => b.addEventListener("click", () => {
      const name = b.dataset.deleteTopic;
      if (confirm(`Delete topic ${name} and all its messages?`)) act(`topic ${name} deleted`, () => api("DELETE", `/api/topics/${enc(name)}`));
    }));
  },
};

function topicDetailPage(name) {
  return {
    mount(root) { root.innerHTML = `<h2>Topic ${esc(name)}</h2><div id="topic"></div>`; },
    async refresh() {
      const t = await api("GET", `/api/topics/${enc(name)}`);
      $("#topic").innerHTML = `<p>id ${esc(t.topic_id)} · ${num(t.messages)} messages · ${bytes(t.bytes)}</p>
        <h2>Partitions</h2>` + table([
        { title: "Partition", num: true, html: (p) => num(p.partition) },
        { title: "Start offset", num: true, html: (p) => num(p.log_start_offset) },
        { title: "High watermark", num: true, html: (p) => num(p.high_watermark) },
        { title: "Messages", num: true, html: (p) => num(p.messages) },
        { title: "Size", num: true, html: (p) => bytes(p.bytes) },
        { title: "", html: (p) => `<a href="#/browser?kind=topic&name=${enc(name)}&partition=${p.partition}&offset=${p.log_start_offset}">browse</a>` },
      ], t.partitions) + "<h2>Consumer groups</h2>" + table([
        { title: "Group", html: (g) => `<a href="#/groups/${enc(g.group)}">${esc(g.group)}</a>` },
        { title: "Lag", num: true, html: (g) => num(g.lag) },
      ], t.groups, "no group has committed offsets") + "<h2>Configs</h2>" + table([
        { title: "Name", html: (c) => esc(c[0]) }, { title: "Value", html: (c) => esc(c[1]) },
      ], Object.entries(t.configs));
    },
  };
}

const groupsPage = {
  mount(root) { root.innerHTML = `<h2>Consumer groups</h2><div id="groups"></div>`; },
  async refresh() {
    const groups = await api("GET", "/api/groups");
    $("#groups").innerHTML = table([
      { title: "Group", html: (g) => `<a href="#/groups/${enc(g.group)}">${esc(g.group)}</a>` },
      { title: "State", html: (g) => esc(g.state) }, { title: "Members", num: true, html: (g) => num(g.members) },
      { title: "Lag", num: true, html: (g) => num(g.lag) },
    ], groups, "no consumer groups");
  },
};

function groupDetailPage(name) {
  return {
    mount(root) {
      root.innerHTML = `<h2>Group ${esc(name)}</h2><div id="group"></div>
        <button class="danger" id="delete-group">Delete group</button>`;
      $("#delete-group").addEventListener("click", () => {
        if (confirm(`Delete consumer group ${name}?`)) act(`group ${name} deleted`, () => api("DELETE", `/api/groups/${enc(name)}`));
      });
    },
    async refresh() {
      const g = await api("GET", `/api/groups/${enc(name)}`);
      $("#group").innerHTML = `<p>state ${esc(g.state)} · protocol ${esc(g.protocol || "-")} · lag ${num(g.lag)}</p><h2>Members</h2>` + table([
        { title: "Member", html: (m) => esc(m.member_id) }, { title: "Client", html: (m) => esc(m.client_id) },
        { title: "Host", html: (m) => esc(m.client_host) },
        { title: "Assignment", html: (m) => esc(m.assignments.map((a) => `${a.topic}[${a.partitions.join(",")}]`).join(" ")) },
      ], g.members, "no active members") + "<h2>Offsets</h2>" + table([
        { title: "Topic", html: (o) => esc(o.topic) }, { title: "Partition", num: true, html: (o) => num(o.partition) },
        { title: "Committed", num: true, html: (o) => num(o.committed) },
        { title: "High watermark", num: true, html: (o) => num(o.high_watermark) },
        { title: "Lag", num: true, html: (o) => num(o.lag) },
      ], g.offsets, "no committed offsets");
    },
  };
}

// Purge and delete ask first; both the queue list and a queue's page offer them.
function purgeQueue(vhost, name) {
  if (confirm(`Purge every ready message from queue ${name}?`)) {
    act(`queue ${name} purged`, () => api("POST", `/api/queues/${enc(name)}/purge?vhost=${enc(vhost)}`));
  }
}
function deleteQueue(vhost, name, afterwards = () => {}) {
  if (confirm(`Delete queue ${name}?`)) {
    act(`queue ${name} deleted`, async () => { await api("DELETE", `/api/queues/${enc(name)}?vhost=${enc(vhost)}`); afterwards(); });
  }
}
const queueHref = (q) => `#/queues/${enc(q.vhost)}/${enc(q.name)}`;

const queuesPage = {
  mount(root) {
    root.innerHTML = `
      <h2>Queues</h2>
      <form class="inline" id="declare-queue"><input name="name" placeholder="queue name" required>
        <button class="primary">Declare queue</button></form>
      <div id="queues"></div>`;
    $("#declare-queue").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const v = formValues(ev.target);
      act(`queue ${v.name} declared`, () => api("PUT", `/api/queues/${enc(v.name)}`, {}));
      ev.target.reset();
    });
  },
  async refresh() {
    const queues = await api("GET", "/api/queues");
    $("#queues").innerHTML = table([
      { title: "Name", html: (q) => `<a href="${queueHref(q)}">${esc(q.name)}</a>` },
      { title: "Vhost", html: (q) => esc(q.vhost) },
      { title: "Ready", num: true, html: (q) => (q.messages === null ? esc(q.state) : num(q.messages)) }, { title: "Unacked", num: true, html: (q) => num(q.unacked) },
      { title: "Consumers", num: true, html: (q) => num(q.consumers) },
      { title: "Publish/s", num: true, html: (q) => num(q.publish_per_s) }, { title: "Deliver/s", num: true, html: (q) => num(q.deliver_per_s) },
      { title: "Ack/s", num: true, html: (q) => num(q.ack_per_s) },
      { title: "", html: (q) => `<button data-purge-queue="${esc(q.name)}" data-vhost="${esc(q.vhost)}">Purge</button> <button class="danger" data-delete-queue="${esc(q.name)}" data-vhost="${esc(q.vhost)}">Delete</button>` },
    ], queues, "no queues");
    document.querySelectorAll("[data-purge-queue]").forEach((b) => b.addEventListener("click", () => purgeQueue(b.dataset.vhost, b.dataset.purgeQueue)));
    document.querySelectorAll("[data-delete-queue]").forEach((b) => b.addEventListener("click", () => deleteQueue(b.dataset.vhost, b.dataset.deleteQueue)));
  },
};

// One queue: settings, counts, rates, bindings and consumers (GET /api/queues/{name}).
// The broker keeps no per-queue rate history, so the chart samples the queue's current rates
// at every refresh and starts when the page opens.
function queueDetailPage(vhost, name) {
  const yesNo = (b) => (b ? "yes" : "no");
  return {
    mount(root) {
      root.innerHTML = `<h2>Queue ${esc(name)}</h2><p id="queue-missing" hidden></p><div id="queue-detail">
        <div class="cards" id="queue-cards"></div>
        <div class="panel"><div class="legend"><span><i style="background:var(--publish)"></i>published/s</span>
          <span><i style="background:var(--deliver)"></i>delivered/s</span><span><i style="background:var(--ack)"></i>acknowledged/s</span></div>
          <canvas class="chart" id="queue-chart"></canvas></div>
        <div class="actions"><a href="#/browser?kind=queue&vhost=${enc(vhost)}&name=${enc(name)}">Browse messages</a>
          <button id="purge-queue">Purge</button> <button class="danger" id="delete-queue">Delete queue</button></div>
        <h2>Properties</h2><div id="queue-properties"></div>
        <h2>Bindings</h2><div id="queue-bindings"></div>
        <h2>Consumers</h2><div id="queue-consumers"></div></div>`;
      this.chart = new WharfChart($("#queue-chart"), [
        { name: "published", color: "#1f6feb" }, { name: "delivered", color: "#2da44e" }, { name: "acknowledged", color: "#8250df" },
      ]);
      $("#purge-queue").addEventListener("click", () => purgeQueue(vhost, name));
      // once deleted, back to the list (without asking for the queue that is gone)
      $("#delete-queue").addEventListener("click", () => deleteQueue(vhost, name, () => { this.deleted = true; location.hash = "#/queues"; }));
    },
    async refresh() {
      if (this.deleted) return;
      let q;
      try {
        q = await api("GET", `/api/queues/${enc(name)}?vhost=${enc(vhost)}`);
      } catch (err) {
        if (err.status !== 404) throw err;
        $("#queue-missing").innerHTML = `No queue ${esc(name)} in virtual host ${esc(vhost)}. <a href="#/queues">All queues</a>`;
        $("#queue-missing").hidden = false;
        $("#queue-detail").hidden = true;
        return;
      }
      $("#queue-missing").hidden = true;
      $("#queue-detail").hidden = false;
      const cards = [
        ["Ready", q.messages === null ? q.state : q.messages], ["Unacked", q.unacked], ["Consumers", q.consumers],
        ["Published/s", q.publish_per_s], ["Delivered/s", q.deliver_per_s], ["Acknowledged/s", q.ack_per_s],
        ["Published", q.published], ["Delivered", q.delivered], ["Acknowledged", q.acked],
      ];
      $("#queue-cards").innerHTML = cards.map(([l, v]) => `<div class="card"><div class="value">${num(v)}</div><div class="label">${esc(l)}</div></div>`).join("");
      this.chart.push(Date.now(), [q.publish_per_s, q.deliver_per_s, q.ack_per_s]);
      this.chart.draw();
      const args = Object.entries(q.arguments).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(" ");
      $("#queue-properties").innerHTML = table([
        { title: "Property", html: (p) => esc(p[0]) }, { title: "Value", html: (p) => esc(p[1]) },
      ], [
        ["Virtual host", q.vhost], ["Type", q.type], ["Durable", yesNo(q.durable)], ["Auto-delete", yesNo(q.auto_delete)],
        ["Exclusive", yesNo(q.exclusive)], ["Arguments", args || "none"],
      ]);
      $("#queue-bindings").innerHTML = table([
        { title: "Exchange", html: (b) => esc(b.source) }, { title: "Routing key", html: (b) => esc(b.routing_key) },
        { title: "Arguments", html: (b) => esc(Object.entries(b.arguments).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(" ")) },
      ], q.bindings, "no bindings besides the default exchange's");
      $("#queue-consumers").innerHTML = table([
        { title: "Tag", html: (c) => esc(c.tag) }, { title: "Ack required", html: (c) => yesNo(c.ack_required) },
        { title: "Exclusive", html: (c) => yesNo(c.exclusive) }, { title: "Active", html: (c) => yesNo(c.active) },
      ], q.consumer_details, "no consumers on this node");
    },
  };
}

const exchangesPage = {
  mount(root) {
    root.innerHTML = `
      <h2>Exchanges</h2>
      <form class="inline" id="declare-exchange"><input name="name" placeholder="exchange name" required>
        <select name="type"><option>direct</option><option>fanout</option><option>topic</option><option>headers</option></select>
        <button class="primary">Declare exchange</button></form>
      <div id="exchanges"></div>
      <h2>Bindings</h2>
      <form class="inline" id="bind"><input name="source" placeholder="exchange" required>
        <input name="destination" placeholder="queue" required><input name="routing_key" placeholder="routing key">
        <button class="primary">Bind</button></form>
      <div id="bindings"></div>`;
    $("#declare-exchange").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const v = formValues(ev.target);
      act(`exchange ${v.name} declared`, () => api("PUT", `/api/exchanges/${enc(v.name)}`, { type: v.type }));
      ev.target.reset();
    });
    $("#bind").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const v = formValues(ev.target);
      act("binding created", () => api("POST", "/api/bindings", v));
      ev.target.reset();
    });
  },
  async refresh() {
    const [exchanges, bindings] = await Promise.all([api("GET", "/api/exchanges"), api("GET", "/api/bindings")]);
    $("#exchanges").innerHTML = table([
      { title: "Name", html: (x) => esc(x.name || "(default)") }, { title: "Type", html: (x) => esc(x.type) },
      { title: "Durable", html: (x) => (x.durable ? "yes" : "no") },
      { title: "", html: (x) => (x.name && !x.name.startsWith("amq.") ? `<button class="danger" data-delete-exchange="${esc(x.name)}">Delete</button>` : "") },
    ], exchanges);
    $("#bindings").innerHTML = table([
      { title: "Source", html: (b) => esc(b.source || "(default)") }, { title: "Destination", html: (b) => esc(b.destination) },
      { title: "Type", html: (b) => esc(b.destination_type) }, { title: "Routing key", html: (b) => esc(b.routing_key) },
      { title: "", html: (b, i) => (b.source ? `<button class="danger" data-unbind='${esc(JSON.stringify(b))}'>Unbind</button>` : "") },
    ], bindings, "no bindings");
    document.querySelectorAll("[data-delete-exchange]").forEach((b) => b.addEventListener("click", () => {
      const name = b.dataset.deleteExchange;
      if (confirm(`Delete exchange ${name}?`)) act(`exchange ${name} deleted`, () => api("DELETE", `/api/exchanges/${enc(name)}`));
    }));
    document.querySelectorAll("[data-unbind]").forEach((b) => b.addEventListener("click", () => {
      const { source, destination, destination_type, routing_key, arguments: args } = JSON.parse(b.dataset.unbind);
      if (confirm(`Unbind ${destination} from ${source}?`)) act("binding removed", () => api("DELETE", "/api/bindings", { source, destination, destination_type, routing_key, arguments: args }));
    }));
  },
};

const connectionsPage = {
  mount(root) { root.innerHTML = `<h2>Connections</h2><div id="connections"></div>`; },
  async refresh() {
    const conns = await api("GET", "/api/connections");
    $("#connections").innerHTML = table([
      { title: "Id", html: (c) => esc(c.id) }, { title: "Protocol", html: (c) => esc(c.protocol) },
      { title: "Peer", html: (c) => esc(c.peer) }, { title: "Client", html: (c) => esc(c.client_id) },
      { title: "User", html: (c) => esc(c.user ?? "") }, { title: "Vhost", html: (c) => esc(c.vhost ?? "") },
      { title: "Connected since", html: (c) => (c.connected_since_ms ? esc(new Date(c.connected_since_ms).toISOString()) : "") },
      { title: "Requests", num: true, html: (c) => (c.requests == null ? "" : num(c.requests)) },
      { title: "In", num: true, html: (c) => (c.bytes_in == null ? "" : bytes(c.bytes_in)) },
      { title: "Out", num: true, html: (c) => (c.bytes_out == null ? "" : bytes(c.bytes_out)) },
      { title: "", html: (c) => `<button class="danger" data-close="${esc(c.id)}">Close</button>` },
    ], conns, "no client connections");
    document.querySelectorAll("[data-close]").forEach((b) => b.addEventListener("click", () => {
      const id = b.dataset.close;
      if (confirm(`Close connection ${id}?`)) act(`connection ${id} closed`, () => api("DELETE", `/api/connections/${enc(id)}`));
    }));
  },
};

// The message browser: a topic partition read from an offset, or a peek at a queue's ready
// messages (nothing is consumed either way). Each input has a visible label; the inputs that
// only one source uses are shown only for it.
function browserPage(params) {
  const field = (id, label, input, only = "") =>
    `<span class="field"${only ? ` data-only="${only}"` : ""}><label for="${id}">${label}</label>${input}</span>`;
  return {
    mount(root) {
      root.innerHTML = `
        <h2>Message browser</h2>
        <form class="inline fields" id="peek">
          ${field("peek-kind", "Source", `<select id="peek-kind" name="kind"><option value="topic">topic</option><option value="queue">queue</option></select>`)}
          ${field("peek-name", "Name", `<input id="peek-name" name="name" placeholder="topic or queue" required>`)}
          ${field("peek-vhost", "Virtual host", `<input id="peek-vhost" name="vhost" value="/" required>`, "queue")}
          ${field("peek-partition", "Partition", `<input id="peek-partition" name="partition" type="number" min="0" value="0">`, "topic")}
          ${field("peek-offset", "From offset", `<input id="peek-offset" name="offset" type="number" min="0" value="0">`, "topic")}
          ${field("peek-count", "How many", `<input id="peek-count" name="count" type="number" min="1" max="500" value="20">`)}
          <button class="primary">Peek</button></form>
        <div id="messages"></div>`;
      const form = $("#peek");
      for (const [k, v] of params) if (form.elements[k]) form.elements[k].value = v;
      const showFields = () => form.querySelectorAll("[data-only]").forEach((f) => {
        f.hidden = f.dataset.only !== form.elements.kind.value;
        f.querySelectorAll("input").forEach((i) => { i.disabled = f.hidden; });
      });
      form.elements.kind.addEventListener("change", showFields);
      showFields();
      form.addEventListener("submit", (ev) => { ev.preventDefault(); this.peek().catch((e) => notice(e.message, true)); });
      if (params.get("name")) this.peek().catch((e) => notice(e.message, true));
    },
    async peek() {
      const v = formValues($("#peek"));
      const result = v.kind === "topic"
        ? await api("GET", `/api/topics/${enc(v.name)}/partitions/${Number(v.partition)}/messages?offset=${Number(v.offset)}&limit=${Number(v.count)}`)
        : await api("POST", `/api/queues/${enc(v.name)}/get?vhost=${enc(v.vhost)}`, { count: Number(v.count), ack: false });
      $("#messages").innerHTML = table([
        { title: v.kind === "topic" ? "Offset" : "#", num: true, html: (m) => num(m.offset ?? "") },
        { title: "Time", html: (m) => (m.timestamp_ms ? esc(new Date(m.timestamp_ms).toISOString()) : "") },
        { title: "Key / routing key", html: (m) => esc(m.key ?? m.routing_key ?? "") },
        { title: "Headers", html: (m) => esc(Object.entries(m.headers).map(([k, x]) => `${k}=${x}`).join(" ")) },
        { title: "Value", html: (m) => `<pre class="payload">${esc(m.value)}</pre>${m.encoding === "base64" ? " <small>(base64)</small>" : ""}` },
      ], result.messages, "no messages");
    },
    async refresh() {},
  };
}

// ---- routing and polling -----------------------------------------------------------------

let current = overviewPage;

function route() {
  const [path, query] = (location.hash.slice(1) || "/overview").split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  const params = new URLSearchParams(query || "");
  const pages = {
    overview: () => overviewPage, topics: () => (parts[1] ? topicDetailPage(parts[1]) : topicsPage),
    groups: () => (parts[1] ? groupDetailPage(parts[1]) : groupsPage),
    queues: () => (parts.length > 2 ? queueDetailPage(parts[1], parts[2]) : queuesPage),
    exchanges: () => exchangesPage, connections: () => connectionsPage, browser: () => browserPage(params),
  };
  const make = pages[parts[0]] || pages.overview;
  current = make();
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", a.dataset.page === (parts[0] || "overview")));
  current.mount($("#page"));
  poll();
}

async function poll() {
  const status = $("#status");
  try {
    await current.refresh();
    status.textContent = "live · " + new Date().toLocaleTimeString();
    status.classList.remove("down");
  } catch (err) {
    status.textContent = "broker unreachable: " + err.message;
    status.classList.add("down");
  }
}

window.addEventListener("hashchange", route);
route();
setInterval(poll, REFRESH_MS);
