// The EMA crossover of py_strategies/ema.py, in JavaScript: long `qty` while the
// fast EMA is above the slow one, flat otherwise. Its prices survive a swap
// through a JSON snapshot in the script's state directory.
const fs = require('fs');

function ema(prices, period) {
  if (prices.length < period) return null;
  const k = 2 / (period + 1);
  let value = 0;
  for (let i = 0; i < period; i++) value += prices[i];
  value /= period;
  for (let i = period; i < prices.length; i++) value += k * (prices[i] - value);
  return value;
}

// cooldown: seconds (of the trades' own time) between two orders.
function makeStrategy(label, fast, slow, qty, snapshot, cooldown) {
  fast = fast || 12;
  slow = slow || 26;
  qty = qty || 0.01;
  snapshot = snapshot || '/ema_state.json';
  const cooldownNs = (cooldown || 0) * 1e9;
  let lastOrderNs = -Infinity;
  const s = { symbols: [sym], label: label, prices: [], signal: 0, tradesSeen: 0, pending: null };
  s.onStart = () => {
    if (fs.existsSync(snapshot)) {
      s.prices = JSON.parse(fs.readFileSync(snapshot)).prices;
    }
    console.log('ema', label, 'started with', s.prices.length, 'prices');
  };
  s.onStop = () => {
    fs.writeFileSync(snapshot, JSON.stringify({ prices: s.prices }));
  };
  s.onOrderUpdate = (_ctx, u) => {
    if (u.orderId === s.pending && ['filled', 'canceled', 'rejected'].indexOf(u.status) >= 0) s.pending = null;
  };
  s.onTrade = (ctx, t) => {
    s.tradesSeen++;
    s.prices.push(t.price);
    if (s.prices.length > slow * 4) s.prices.shift();
    if (s.prices.length < slow) return;
    const want = ema(s.prices, fast) > ema(s.prices, slow) ? 1 : 0;
    if (want === s.signal) return;
    s.signal = want;
    // One decision in flight at a time, including orders a predecessor left open.
    if (s.pending !== null || ctx.openOrders.length) return;
    const now = t.exchangeTsNs || t.recvTsNs;
    if (now - lastOrderNs < cooldownNs) return;
    if (want === 1 && ctx.position <= 0) { s.pending = ctx.marketBuy(qty); lastOrderNs = now; }
    else if (want === 0 && ctx.position > 0) { s.pending = ctx.marketSell(ctx.position); lastOrderNs = now; }
  };
  return s;
}

// Registered with a one-second cooldown, so that an EMA that flickers does not hit the order rate limit.
flox.register(makeStrategy('v1', 12, 26, 0.01, undefined, 1));
