// Compiled (never run) by `npm test` with `tsc --noEmit`: the declarations of src/the-eye.d.ts
// must accept what the README shows and refuse what the SDK does not take.
import { createTracker, flush, init, setConsent, track, type Consent, type TheEyeError, type Tracker } from 'the-eye-sdk';

const errors: TheEyeError[] = [];
const tracker: Tracker = init({
  endpoint: 'http://127.0.0.1:8000',
  key: 'eye_k3m9x2pq_…',
  flushIntervalMs: 2000,
  maxBatch: 50,
  storage: null,
  onError: (error) => {
    errors.push(error);
    if (error.reason === 'refused' && error.code === 'origin_not_allowed') {
      console.error('register this origin:', location.origin, error.status);
    }
  },
});
const id: string | null = track('ui', 'click', { button: 'buy', product: 'sku-42' });
const queued: number = tracker.stats().queued;
const session: string = tracker.sessionId();
void flush().then(() => tracker.shutdown());
createTracker({ endpoint: 'https://eye.example.com', key: 'k', autoPageviews: false }).pageview();
const waiting = createTracker({ endpoint: 'https://eye.example.com', key: 'k', consent: 'pending' });
const state: Consent | undefined = waiting.consent();
const agreed: boolean = setConsent('granted') && waiting.setConsent('denied');

// @ts-expect-error: a misspelt option is a type error (and warned about at run time)
init({ endpoint: 'https://eye.example.com', key: 'k', flushInterval: 2000 });
// @ts-expect-error: the key is required
init({ endpoint: 'https://eye.example.com' });
// @ts-expect-error: data is an object
track('ui', 'click', 'buy');
// @ts-expect-error: not a consent state
setConsent('yes');
// @ts-expect-error: not a reason the SDK reports
const reason: TheEyeError['reason'] = 'lost';

export { id, queued, session, reason, state, agreed };
