// json-rules-engine side of Nurture's evaluator benchmark against peers
// (docs/benchmarks.md, "Evaluator against peers"), driven by
// bench/peers/json-rules-engine.sh:
//
//   node bench.js --events FILE --expect FILE --reps N [--paths jsonpath]
//
// Scores every event of FILE (JSON Lines, from `nurture gen`) with the rules
// in rules.json: one Engine, rules added once, `engine.run(event)` for one
// event at a time, the points of the events it fires summed. Checks every
// event's points and every lead's total against --expect (written by Nurture
// from the same events) and fails loudly if they differ. Prints
// `json-rules-engine <median events/s> <events/s of each rep>`.
//
// Condition paths (`"path": "$.path"`) are resolved with a plain property
// lookup (the engine's documented `pathResolver` option), which is much
// faster than the default JSONPath; `--paths jsonpath` uses the default.

'use strict'

const fs = require('node:fs')
const path = require('node:path')
const { Engine } = require('json-rules-engine')

function args () {
  const a = process.argv.slice(2)
  const o = { paths: 'plain' }
  for (let i = 0; i < a.length; i += 2) {
    if (!a[i].startsWith('--') || a[i + 1] === undefined) {
      throw new Error(`usage: node bench.js --events FILE --expect FILE --reps N [--paths jsonpath]; got ${a[i]}`)
    }
    o[a[i].slice(2)] = a[i + 1]
  }
  for (const k of ['events', 'expect', 'reps']) {
    if (o[k] === undefined) throw new Error(`--${k} is required`)
  }
  return o
}

function engine (rules, paths) {
  const options = { allowUndefinedFacts: true }
  if (paths === 'plain') {
    for (const r of rules) {
      for (const c of r.conditions.all) {
        if (c.path !== undefined && !/^\$\.\w+$/.test(c.path)) {
          throw new Error(`rule ${r.name}: path ${c.path} is not $.key`)
        }
      }
    }
    options.pathResolver = (value, p) => (value == null ? undefined : value[p.slice(2)])
  } else if (paths !== 'jsonpath') {
    throw new Error(`--paths ${paths}: plain or jsonpath`)
  }
  const e = new Engine([], options)
  e.addOperator('startsWith', (fact, value) => typeof fact === 'string' && fact.startsWith(value))
  for (const r of rules) e.addRule(r)
  return e
}

async function run (e, events) {
  const points = new Array(events.length).fill(0)
  const t = process.hrtime.bigint()
  for (let i = 0; i < events.length; i++) {
    const result = await e.run(events[i])
    let p = 0
    for (const ev of result.events) p += ev.params.points
    points[i] = p
  }
  const secs = Number(process.hrtime.bigint() - t) / 1e9
  return { rate: events.length / secs, points }
}

function check (points, events, expect) {
  const diffs = []
  if (points.length !== expect.points.length) {
    diffs.push(`${points.length} events against ${expect.points.length}`)
  }
  for (let i = 0; i < points.length; i++) {
    if (points[i] !== expect.points[i]) {
      diffs.push(`event ${i} (line ${i + 1}, ${events[i].type}): ${points[i]} against ${expect.points[i]}`)
    }
  }
  const leads = new Map()
  for (let i = 0; i < points.length; i++) {
    leads.set(events[i].lead, (leads.get(events[i].lead) || 0) + points[i])
  }
  const want = Object.entries(expect.leads)
  if (leads.size !== want.length) diffs.push(`${leads.size} leads against ${want.length}`)
  for (const [lead, score] of want) {
    if (leads.get(lead) !== score) diffs.push(`lead ${lead}: ${leads.get(lead)} against ${score}`)
  }
  if (diffs.length > 0) {
    throw new Error(`RESULTS DIFFER: json-rules-engine against nurture, ${diffs.length} differences, first: ${diffs.slice(0, 10).join('; ')}`)
  }
}

function median (xs) {
  const v = [...xs].sort((a, b) => a - b)
  const n = v.length
  return n % 2 === 1 ? v[(n - 1) / 2] : (v[n / 2 - 1] + v[n / 2]) / 2
}

async function main () {
  const o = args()
  const rules = JSON.parse(fs.readFileSync(path.join(__dirname, 'rules.json'), 'utf8'))
  const events = fs.readFileSync(o.events, 'utf8').split('\n').filter((l) => l.trim() !== '').map((l) => JSON.parse(l))
  const expect = JSON.parse(fs.readFileSync(o.expect, 'utf8'))
  const e = engine(rules, o.paths)

  check((await run(e, events)).points, events, expect) // warm-up (JIT) and check
  const rates = []
  for (let r = 0; r < Number(o.reps); r++) {
    const { rate, points } = await run(e, events)
    check(points, events, expect)
    rates.push(rate)
  }
  console.log(`json-rules-engine ${median(rates).toFixed(0)} ${rates.map((x) => x.toFixed(0)).join(',')}`)
}

main().catch((err) => {
  console.error(`bench.js: ${err.message}`)
  process.exit(1)
})
