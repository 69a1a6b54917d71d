/**
 * The status page (`/` on the metrics port): what `mcrepl status --json` says, per site and data
 * center, refreshed every two seconds from `/status.json`, plus what this process measured
 * (apply lag, ops applied per second). One small self-contained page: no build step, readable
 * on a phone.
 */
export const STATUS_PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>mcrepl status</title>
<style>
  :root { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d2330; background: #f4f6f9; }
  body { margin: 0; padding: 12px; }
  h1 { font-size: 1.25rem; margin: 0 0 4px; }
  .muted { color: #667085; font-size: .85rem; }
  .grid { display: grid; gap: 12px; grid-template-columns: repeat(auto-fit, minmax(300px, 1fr)); margin-top: 12px; }
  .card { background: #fff; border-radius: 10px; padding: 12px 14px; box-shadow: 0 1px 3px rgba(16,24,40,.1); }
  .card h2 { font-size: 1.05rem; margin: 0 0 8px; display: flex; justify-content: space-between; gap: 8px; }
  table { width: 100%; border-collapse: collapse; font-size: .9rem; }
  td, th { text-align: left; padding: 3px 4px; border-bottom: 1px solid #eef0f3; vertical-align: top; }
  th { font-weight: 600; color: #475467; }
  .num { text-align: right; font-variant-numeric: tabular-nums; }
  .badge { display: inline-block; padding: 1px 8px; border-radius: 999px; font-size: .8rem; font-weight: 600; }
  .healthy, .ok { background: #dcfae6; color: #067647; }
  .down, .failed, .error { background: #fee4e2; color: #b42318; }
  .recovering, .unknown, .warn { background: #fef0c7; color: #b54708; }
  .kv { display: grid; grid-template-columns: max-content 1fr; gap: 2px 10px; font-size: .9rem; }
  .kv div:nth-child(odd) { color: #475467; }
  code { font-size: .85rem; word-break: break-all; }
</style>
</head>
<body>
<h1>mcrepl</h1>
<div class="muted" id="updated">loading…</div>
<div id="root"></div>
<script>
const prev = new Map();
const esc = (s) => String(s ?? '').replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]);
const ms = (s) => (s === null || s === undefined ? '–' : s < 1 ? (s * 1000).toFixed(0) + ' ms' : s.toFixed(2) + ' s');
function siteCard(site, local) {
  if (site.error) return '<div class="card"><h2>site ' + esc(site.site) + ' <span class="badge error">unreachable</span></h2><div class="muted">' + esc(site.error) + '</div></div>';
  const cp = site.checkpoint;
  const src = site.source || {};
  let html = '<div class="card" data-site="' + esc(site.site || 'default') + '"><h2>site ' + esc(site.site || 'default') + '<span class="badge ' + (site.tailer ? 'ok' : 'down') + '">tailer ' + (site.tailer ? 'active' : 'none') + '</span></h2><div class="kv">'
    + '<div>source</div><div><code>' + esc(src.server) + '</code>' + (src.transactionsBehind === null || src.transactionsBehind === undefined ? '' : src.transactionsBehind === 0 ? ' · up to date' : ' · ' + src.transactionsBehind + ' behind') + '</div>'
    + '<div>tailer</div><div class="tailer"><code>' + esc(site.tailer || 'none') + '</code></div>'
    + '<div>checkpoint</div><div>' + (cp ? 'op #' + cp.txnSeq + ', ' + (cp.ageMs / 1000).toFixed(1) + ' s ago' : 'none yet') + '</div>'
    + '<div>redis</div><div><code>' + esc(site.redis && site.redis.server) + '</code> (' + esc(site.redis && site.redis.role) + ')</div>'
    + '<div>dead letters</div><div class="dead-letters">' + (site.deadLetters ? site.deadLetters.total : '–') + '</div>'
    + '</div></div>';
  for (const d of site.datacenters || []) {
    const m = (local && local[d.name]) || {};
    const key = (site.site || '') + '/' + d.name;
    const before = prev.get(key);
    const now = Date.now();
    const rate = before && m.opsApplied !== undefined ? ((m.opsApplied - before.ops) / ((now - before.at) / 1000)) : null;
    if (m.opsApplied !== undefined) prev.set(key, { ops: m.opsApplied, at: now });
    html += '<div class="card dc" data-dc="' + esc(d.name) + '"><h2>' + esc(d.name) + '<span class="badge ' + (d.worker ? 'ok' : 'down') + '">workers ' + (d.worker ? 'active' : 'none') + '</span></h2>'
      + '<div class="kv"><div>queued</div><div class="queued">' + (d.queued.waiting + d.queued.delayed) + '</div><div>active</div><div class="active">' + d.queued.active + '</div><div>failed</div><div class="failed-jobs">' + d.queued.failed + '</div>'
      + '<div>apply lag</div><div>' + (m.lagCount ? 'p50 ' + ms(m.lagP50) + ' · p99 ' + ms(m.lagP99) + ' (' + m.lagCount + ' jobs)' : '<span class="muted">not measured by this process</span>') + '</div>'
      + '<div>throughput</div><div>' + (rate === null ? '<span class="muted">–</span>' : Math.max(0, rate).toFixed(0) + ' ops/s') + '</div>'
      + (d.migration && d.migration.phase !== 'done' ? '<div>servers changing</div><div>' + esc(d.migration.phase) + ': ' + d.migration.copied + ' copied</div>' : '')
      + '</div><table><thead><tr><th>server</th><th>health</th><th class="num">missed</th></tr></thead><tbody>';
    for (const s of d.servers) html += '<tr class="server" data-server="' + esc(s.address) + '"><td><code>' + esc(s.address) + '</code></td><td><span class="badge health ' + esc(s.health) + '">' + esc(s.health) + '</span>' + (s.mustFlush ? ' <span class="badge warn">flush</span>' : '') + '</td><td class="num">' + s.missedOps + '</td></tr>';
    html += '</tbody></table></div>';
  }
  return html;
}
async function refresh() {
  try {
    const r = await fetch('status.json', { cache: 'no-store' });
    const body = await r.json();
    const sites = body.status.sites || [body.status];
    document.getElementById('root').innerHTML = '<div class="grid">' + sites.map((s) => siteCard(s, body.local)).join('') + '</div>';
    document.getElementById('updated').textContent = 'updated ' + new Date().toLocaleTimeString() + ' · refreshed every 2 s';
  } catch (err) {
    document.getElementById('updated').textContent = 'could not load status: ' + err;
  }
}
refresh();
setInterval(refresh, 2000);
</script>
</body>
</html>
`;
