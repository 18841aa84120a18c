#!/usr/bin/env node
// Usage: report.mjs PEERS_RESULTS.tsv EXTRA.tsv INFO.txt > RESULTS.md
// Medians per tool and step, then drctl against the goals of the foundation issue, as
// restic's figure ÷ drctl's in the same run.
import { readFileSync, existsSync } from 'node:fs';

const [peersTsv, extraTsv, infoTxt] = process.argv.slice(2);
const rows = [peersTsv, extraTsv].filter((f) => f && existsSync(f)).flatMap((f) => {
  const [head, ...lines] = readFileSync(f, 'utf8').trim().split('\n');
  const cols = head.split('\t');
  return lines.map((l) => Object.fromEntries(l.split('\t').map((v, i) => [cols[i], v])));
});
const info = infoTxt && existsSync(infoTxt) ? readFileSync(infoTxt, 'utf8').trim() : '';

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? (s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2) : NaN;
};
const get = (tool, step, field) => median(rows.filter((r) => r.tool === tool && r.step === step && r.status === 'ok').map((r) => Number(r[field])));
const failed = rows.filter((r) => r.status !== 'ok');
const tools = [...new Set(rows.map((r) => r.tool))];
const steps = ['img-backup1', 'img-backup2', 'img-backup2-cbt', 'img-backup2-cbt-warm', 'img-restore', 'img-check', 'tree-backup1', 'tree-backup2', 'tree-restore', 'img8-backup1', 'img8-restore', 'img8-check'];
const MiB = 1024 * 1024;
const fmt = (n, d = 1) => (Number.isFinite(n) ? n.toFixed(d) : '–');

const out = [];
out.push('# Benchmark results', '');
out.push(`Run: ${new Date().toISOString().slice(0, 10)} on this 2-core machine, warm page cache, one process at a time. Regenerate with \`npm run bench\` (bench/run.sh).`, '');
if (info) out.push('```', info, '```', '');
out.push('## Every step', '', '| step | tool | wall s | MB/s | peak RSS MiB | repo MiB after |', '|---|---|---:|---:|---:|---:|');
for (const step of steps) {
  for (const tool of tools) {
    const wall = get(tool, step, 'wall_s');
    if (!Number.isFinite(wall)) continue;
    const bytes = get(tool, step, 'src_bytes');
    out.push(`| ${step} | ${tool} | ${fmt(wall, 2)} | ${fmt(bytes / 1e6 / wall, 0)} | ${fmt(get(tool, step, 'maxrss_kb') / 1024, 0)} | ${fmt(get(tool, step, 'repo_bytes') / MiB, 0)} |`);
  }
}
out.push('');

const ratio = (step, cmpStep = step) => get('restic', step, 'wall_s') / get('drctl', cmpStep, 'wall_s');
const growth = (tool) => (get(tool, 'img-backup2', 'repo_bytes') - get(tool, 'img-backup1', 'repo_bytes')) / MiB;
const goals = [
  ['image backup1 (full)', ratio('img-backup1'), '≥ 2.0×', (r) => r >= 2.0],
  ['image backup2 (2% changed, full re-read)', ratio('img-backup2'), '≥ 2.0×', (r) => r >= 2.0],
  ['image backup2 with a changed-extent list', ratio('img-backup2', 'img-backup2-cbt'), '≥ 10×', (r) => r >= 10],
  ['image restore', ratio('img-restore'), '≥ 2.5×', (r) => r >= 2.5],
  ['check --read-data', ratio('img-check'), '≥ 1.5×', (r) => r >= 1.5],
  ['tree backup1', ratio('tree-backup1'), '≥ 1.5×', (r) => r >= 1.5],
  ['tree backup2', ratio('tree-backup2'), '≥ 1.0×', (r) => r >= 1.0],
  ['tree restore', ratio('tree-restore'), '≥ 1.5×', (r) => r >= 1.5],
];
out.push('## Goals (restic time ÷ drctl time, same run)', '', '| step | ratio | goal | met |', '|---|---:|---|---|');
for (const [name, r, goal, ok] of goals) out.push(`| ${name} | ${fmt(r, 2)}× | ${goal} | ${Number.isFinite(r) ? (ok(r) ? 'yes' : '**no**') : '–'} |`);
const warm = ratio('img-backup2', 'img-backup2-cbt-warm');
if (Number.isFinite(warm)) out.push(`| (for reference, not the goal) the same in a running process, as the daemon runs it | ${fmt(warm, 2)}× | – | – |`);
const gD = growth('drctl');
const gR = growth('restic');
out.push(`| repository growth after the 2% change | drctl ${fmt(gD)} MiB vs restic ${fmt(gR)} MiB | ≤ restic's | ${gD <= gR ? 'yes' : '**no**'} |`);
for (const [label, step] of [['image', 'img-backup2'], ['tree', 'tree-backup2']]) {
  const q = get('drctl', step, 'repo_bytes') / get('restic', step, 'repo_bytes');
  out.push(`| ${label} repository size after the second backup | ${fmt(q, 3)}× restic's | ≤ 1.05× | ${q <= 1.05 ? 'yes' : '**no**'} |`);
}
const peerSteps = ['img-backup1', 'img-backup2', 'img-restore', 'img-check', 'tree-backup1', 'tree-backup2', 'tree-restore'];
const rssRatios = peerSteps.map((s) => [s, get('drctl', s, 'maxrss_kb') / get('restic', s, 'maxrss_kb')]).filter(([, r]) => Number.isFinite(r));
const worst = rssRatios.reduce((a, b) => (b[1] > a[1] ? b : a), ['', 0]);
out.push(`| peak RSS, worst step (${worst[0]}) | ${fmt(worst[1], 2)}× restic's | ≤ 2× | ${worst[1] <= 2 ? 'yes' : '**no**'} |`);
for (const [s2, s8] of [['img-backup1', 'img8-backup1'], ['img-restore', 'img8-restore'], ['img-check', 'img8-check']]) {
  const a = get('drctl', s2, 'maxrss_kb');
  const b = get('drctl', s8, 'maxrss_kb');
  if (Number.isFinite(b)) out.push(`| peak RSS ${s2}: 8 GiB vs 2 GiB image | ${fmt(b / 1024, 0)} vs ${fmt(a / 1024, 0)} MiB (${fmt(b / a, 2)}×) | ±10% | ${Math.abs(b / a - 1) <= 0.1 ? 'yes' : '**no**'} |`);
}
out.push('');
if (failed.length) {
  out.push('## Failed steps', '');
  for (const r of failed) out.push(`- ${r.tool} ${r.step}: ${r.status}`);
  out.push('');
}
// Results of the separate benchmarks (bench/prune.sh, bench/iscsi.sh, the libvirt run) travel with this page.
for (const name of ['NOTES.md', 'PRUNE.md', 'ISCSI.md', 'LIBVIRT.md']) {
  const file = new URL(`./${name}`, import.meta.url);
  if (existsSync(file)) out.push(readFileSync(file, 'utf8').trim(), '');
}
process.stdout.write(out.join('\n') + '\n');
