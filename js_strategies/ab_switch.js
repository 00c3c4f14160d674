// An A/B switch: two variants of a strategy take turns in the slot, each for
// `every` trades, swapping themselves with runner.replaceStrategy. The swap
// lands at the next event boundary, so every trade goes to exactly one variant.
const every = 100;
const counts = { A: 0, B: 0 };

function variant(name, slot) {
  const s = { symbols: [sym], name: name, seen: 0 };
  s.onTrade = (ctx, t) => {
    s.seen++;
    counts[name]++;
    if (s.seen === every) {
      runner.replaceStrategy(slot, variant(name === 'A' ? 'B' : 'A', slot));
    }
  };
  s.onStop = () => { console.log('variant', name, 'handled', s.seen, 'trades'); };
  return s;
}

function makeStrategy(slot) { return variant('A', slot || 0); }

flox.register(makeStrategy(0));
