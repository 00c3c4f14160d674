// The JavaScript example of the hot-reload page, as written there, plus the
// registration of a first version for a runner to start with.
const fs = require('fs');
const SNAPSHOT = '/tmp/strategy_state.json';
function makeStrategy(label) {
const s = { symbols: [sym], prices: [] };
s.onStart = () => {
if (fs.existsSync(SNAPSHOT)) {
s.prices = JSON.parse(fs.readFileSync(SNAPSHOT)).prices;
}
};
s.onStop = () => {
fs.writeFileSync(SNAPSHOT, JSON.stringify({ prices: s.prices }));
};
s.onTrade = (_ctx, t) => { s.prices.push(t.price); };
return s;
}
runner.replaceStrategy(0, makeStrategy('v2'));
