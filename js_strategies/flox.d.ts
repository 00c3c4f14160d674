// Type declarations for flox-trio JavaScript strategies: what the host gives a script.
// Point your editor at this file (/// <reference path="flox.d.ts" />) for completion.
// A test (tests/js/test_api_docs.py) keeps it in step with what the host really provides.

/** The symbol the script was loaded for (the first symbol of its slot). A script may declare its own. */
declare var sym: string;

declare var flox: {
  /** The strategy `flox.js.load(...).registered` returns. */
  register(strategy: Strategy): void;
};

declare var runner: {
  /** Swap the strategy in slot `index` at that slot's next event boundary (your own slots, unless granted). */
  replaceStrategy(index: number, strategy: Strategy): void;
  /** Put a strategy in a new slot (at most four per script unless granted). */
  addStrategy(strategy: Strategy): void;
};

declare var console: {
  log(...args: unknown[]): void;
  info(...args: unknown[]): void;
  debug(...args: unknown[]): void;
  warn(...args: unknown[]): void;
  error(...args: unknown[]): void;
};

/** The state directory of the script, and nothing else: '/x.json' is STATE_DIR/x.json, '..' out of it is refused. */
interface Fs {
  existsSync(path: string): boolean;
  /** The file's text; throws ENOENT if there is none. */
  readFileSync(path: string): string;
  /** Written when the call returns; at most 1 MB and 256 files in all. */
  writeFileSync(path: string, data: string): void;
}
declare function require(name: "fs"): Fs;

interface Strategy {
  /** ["BTCUSDT"] or ["binance:BTCUSDT"]. */
  symbols: string[];
  onStart?(): void | Promise<void>;
  onStop?(): void | Promise<void>;
  onTrade?(ctx: Ctx, trade: Trade): void | Promise<void>;
  onBook?(ctx: Ctx, book: Book): void | Promise<void>;
  onBar?(ctx: Ctx, bar: Bar): void | Promise<void>;
  onGap?(ctx: Ctx, gap: Gap): void | Promise<void>;
  onOrderUpdate?(ctx: Ctx, update: OrderUpdate): void | Promise<void>;
  onFill?(ctx: Ctx, fill: Fill): void | Promise<void>;
}

/** The slot's view of one symbol. Order intents return the order id at once. */
interface Ctx {
  readonly symbol: string;
  /** Signed position of the slot in this symbol, as of the start of the call. */
  readonly position: number;
  readonly lastPrice: number | null;
  readonly bestBid: number | null;
  readonly bestAsk: number | null;
  readonly mid: number | null;
  /** Ids of the slot's open orders in this symbol, as of the start of the call. */
  readonly openOrders: string[];
  marketBuy(qty: number | string): string;
  marketSell(qty: number | string): string;
  limitBuy(price: number | string, qty: number | string): string;
  limitSell(price: number | string, qty: number | string): string;
  cancel(orderId: string): void;
  /** A resting limit order's new price, total qty (what is filled counts), or both; answered by
   *  an onOrderUpdate whose reason is "amended" or "amend refused: ...". */
  amend(orderId: string, change: { price?: number | string; qty?: number | string }): void;
  cancelAll(): void;
}

/** Nanosecond times are doubles (QuickJS numbers): about 256 ns of precision. */
interface Trade {
  readonly symbol: string;
  readonly price: number;
  readonly qty: number;
  /** The taker's side. */
  readonly side: "buy" | "sell";
  readonly tradeId: string;
  readonly exchangeTsNs: number;
  readonly recvTsNs: number;
}

interface Book {
  symbol: string;
  /** [price, qty], best first. */
  bids: [number, number][];
  asks: [number, number][];
  exchangeTsNs: number;
  recvTsNs: number;
  seq: number;
}

interface Bar {
  symbol: string;
  open: number;
  high: number;
  low: number;
  close: number;
  volume: number;
  tradeCount: number;
  startTsNs: number;
  endTsNs: number;
  intervalS: number;
}

/** Events of the symbol were missed: the venue's trade ids jumped, or a queue dropped some. */
interface Gap {
  symbol: string;
  reason: "trade_ids" | "dropped";
  /** How many, when known (-1 if not). */
  missing: number;
  firstId: string;
  lastId: string;
  exchangeTsNs: number;
  recvTsNs: number;
}

interface OrderUpdate {
  orderId: string;
  symbol: string;
  side: "buy" | "sell";
  orderType: "market" | "limit";
  status: "new" | "accepted" | "partially_filled" | "filled" | "canceled" | "rejected";
  qty: number;
  filledQty: number;
  price: number | null;
  avgFillPrice: number | null;
  reason: string;
  tsNs: number;
}

interface Fill {
  orderId: string;
  symbol: string;
  side: "buy" | "sell";
  price: number;
  qty: number;
  fee: number;
  liquidity: "maker" | "taker";
  tsNs: number;
  tradeId: string;
}
