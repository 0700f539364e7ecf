// Type declarations of the browser SDK (src/the-eye.js), written by hand and checked by
// `npm test` (`tsc --noEmit` on test/types/usage.ts). Keep them in step with README.md.

/** What the SDK reports through `onError`. */
export interface TheEyeError {
  /**
   * - `invalid`: `track` was given a bad category, name or data; nothing was queued.
   * - `rejected`: the server refused some events of a request (`problems` says why); not retried.
   * - `refused`: the server refused a whole request (400, 401, 403, 413, 415, other 4xx; `code`
   *   says why, e.g. `origin_not_allowed`); not retried.
   * - `unreachable`: retries of a request ran out (network error, 408, 429, 5xx); the events
   *   are back in the queue for the next flush.
   * - `dropped`: the queue was full; the oldest events were dropped.
   */
  reason: 'invalid' | 'rejected' | 'refused' | 'unreachable' | 'dropped';
  /** Human-readable explanation (the server's message when it sent one). */
  message: string;
  /** The HTTP status, when the server answered (0 when it did not). */
  status?: number;
  /** The server's stable code of a whole refusal: `origin_not_allowed`, `invalid_api_key`, … */
  code?: string;
  /** The server's problems, each with the event's `index`, `field`, `code` and `message`. */
  problems?: Problem[];
  /** The ids of the events concerned. */
  eventIds?: string[];
}

/** One thing the server found wrong, as it sends it. */
export interface Problem {
  index?: number;
  field: string;
  code: string;
  message: string;
}

/** Where the session id is kept: `sessionStorage` or anything with the same two methods. */
export interface SessionStorageLike {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  /** Used by `setConsent('denied')` when present; otherwise the SDK's keys are set to ''. */
  removeItem?(key: string): void;
}

/**
 * The person's consent to tracking, as the page's consent banner knows it:
 * - `pending`: events wait in memory only (bounded by `maxQueue`); nothing is stored or sent,
 *   and a page reload or close forgets them;
 * - `granted`: what waited is sent, and the session is stored;
 * - `denied`: what waited is dropped, what the SDK stored is removed, and `track` records
 *   nothing (returns `null`).
 */
export type Consent = 'pending' | 'granted' | 'denied';

/** The options of `init` and `createTracker`; an unknown one is warned about once. */
export interface Options {
  /** The Eye's base URL, e.g. `https://eye.example.com` (`http://127.0.0.1:8000` in development). */
  endpoint: string;
  /** The application's ingest key (ingest scope only: it is visible in the page). */
  key: string;
  /** Record a pageview on `init` and on single-page-app navigations. Default `true`. */
  autoPageviews?: boolean;
  /** Send a partial batch this long after its first event was queued, in ms. Default 5000. */
  flushIntervalMs?: number;
  /** Send as soon as this many events are queued; at most this many per request (≤ 1000). Default 100. */
  maxBatch?: number;
  /** Events kept in memory; beyond it the oldest are dropped and reported. Default 1000. */
  maxQueue?: number;
  /** Retries of one request before it goes back to the queue until the next flush. Default 5. */
  maxRetries?: number;
  /** First retry delay in ms; doubles with each retry, with jitter. Default 1000. */
  retryBaseMs?: number;
  /** Longest backoff delay in ms (a server's `Retry-After` is honoured as it is). Default 60000. */
  retryMaxMs?: number;
  /** Inactivity in ms after which a new session starts. Default 1800000 (30 minutes). */
  sessionTimeoutMs?: number;
  /** Where the session is kept; `null` for memory only. Default `sessionStorage`. */
  storage?: SessionStorageLike | null;
  /** Called with what went wrong. Default: `console.warn`. */
  onError?: (error: TheEyeError) => void;
  /** The consent state at start (see `Consent`). Absent: the page does not manage consent
   * through the SDK; events are sent as always and carry no `data.consent`. When given, every
   * event carries `data.consent`: the state when it was recorded (`pending` or `granted`).
   * Another value throws. */
  consent?: Consent;
}

/** Counters since `init`, and the events queued now. */
export interface Stats {
  accepted: number;
  beaconed: number;
  rejected: number;
  dropped: number;
  queued: number;
}

/** A JSON object: the `data` of an event (non-empty). */
export type EventData = { [field: string]: unknown };

export interface Tracker {
  /** Queues an event; returns its `event_id` (a UUIDv7), or `null` when it was refused (see `onError`). */
  track(category: string, name: string, data: EventData): string | null;
  /** Records a `page interaction`/`pageview` of the current location now. */
  pageview(): string | null;
  /** Sends what is queued now; settles when done, or when the endpoint stays unreachable. */
  flush(): Promise<void>;
  /** Names the person from now on (after a login): the application's own account id, 1–128
   * characters, sent as `user_id` on every event until `reset()`. Never an e-mail address or a
   * name. Returns false (and reports `invalid`) for a bad id. */
  identify(userId: string): boolean;
  /** Forgets the person and starts a new session (at logout). */
  reset(): void;
  /** Records the person's choice (see `Consent`); returns false (and reports `invalid`) for
   * another value. */
  setConsent(state: Consent): boolean;
  /** The consent state, or `undefined` when the page does not manage consent. */
  consent(): Consent | undefined;
  /** The current session id (starting one if none is live), without extending it: a UUIDv7 of
   * the session's start, so session ids sort by start. */
  sessionId(): string;
  /** Counters since `init` and the events queued now. */
  stats(): Stats;
  /** Stops tracking, removes listeners and history patches, and flushes what is left. */
  shutdown(): Promise<void>;
}

/**
 * Creates an independent tracker. Most pages want `init()` instead, which keeps one.
 * `env` replaces the browser globals (tests only).
 */
export function createTracker(options: Options, env?: object): Tracker;
/** Starts (or restarts) the page's tracker; returns it. */
export function init(options: Options, env?: object): Tracker;
/** `track` on the tracker `init` made; throws if `init` was not called. */
export function track(category: string, name: string, data: EventData): string | null;
/** `pageview` on the tracker `init` made. */
export function pageview(): string | null;
/** `flush` on the tracker `init` made. */
export function flush(): Promise<void>;
/** `identify` on the tracker `init` made. */
export function identify(userId: string): boolean;
/** `reset` on the tracker `init` made. */
export function reset(): void;
/** `setConsent` on the tracker `init` made. */
export function setConsent(state: Consent): boolean;
/** Shuts the tracker `init` made down; returns the final flush's promise. */
export function shutdown(): Promise<void>;
