//! Realistic event bodies: the three event types of The Eye's examples (`page interaction` /
//! `pageview`, `page interaction` / `cta click`, `form interaction` / `submit`), sent by
//! visitors whose sessions last a few dozen events, with current timestamps.
//!
//! Every body must pass the service's validation, payload schemas included (`schemas/`): a
//! benchmark that measures rejections measures the wrong thing. The JSON is written by hand
//! into a reused buffer because every value comes from the fixed ASCII tables below (nothing
//! needs escaping), and the load generator shares the machine's cores with the service: the
//! cheaper a body is to make, the more of the CPU is left for what is measured.

use std::io::Write;

use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

/// Hosts of the organisation's sites.
const HOSTS: [&str; 3] = [
    "www.consumeraffairs.com",
    "shop.consumeraffairs.com",
    "help.consumeraffairs.com",
];

/// Pages with their titles.
const PAGES: [(&str, &str); 8] = [
    ("/", "ConsumerAffairs - Reviews, Ratings and Guides"),
    ("/homeowners/", "Homeowners Guides"),
    ("/insurance/car.html", "Car Insurance Reviews"),
    ("/finance/mortgage-rates.html", "Mortgage Rates Today"),
    ("/solar-energy/", "Solar Energy Companies"),
    ("/home_warranty/", "Home Warranty Reviews"),
    ("/moving/", "Best Moving Companies"),
    ("/about/contact.html", "Contact Us"),
];

const REFERRERS: [&str; 4] = [
    "https://www.google.com/",
    "https://www.bing.com/",
    "https://duckduckgo.com/",
    "https://www.facebook.com/",
];

const QUERIES: [&str; 3] = [
    "utm_source=newsletter&utm_medium=email",
    "page=2",
    "sort=rating",
];

const ELEMENTS: [&str; 6] = [
    "get-quote-button",
    "compare-plans",
    "read-reviews",
    "call-now",
    "newsletter-signup",
    "nav-menu-insurance",
];

const FIRST_NAMES: [&str; 6] = ["Ada", "Grace", "Alan", "Linus", "Margaret", "Dennis"];
const LAST_NAMES: [&str; 6] = [
    "Lovelace", "Hopper", "Turing", "Torvalds", "Hamilton", "Ritchie",
];
const ZIP_CODES: [&str; 4] = ["10001", "94105", "60601", "73301"];

/// A small, fast PRNG (xorshift64*): the bodies need variety, not cryptographic quality.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator whose stream depends on every bit of `seed`. The seed goes through
    /// SplitMix64's finaliser first: the workers' seeds differ by one, and a state made of
    /// `seed | 1` gave seeds 2k and 2k+1 the same stream (two workers sent the same bodies,
    /// the same event ids when they sent in the same millisecond).
    pub fn new(seed: u64) -> Self {
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        // xorshift's state must not be zero.
        Self(if z == 0 { 0x9e37_79b9_7f4a_7c15 } else { z })
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    pub fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

/// One visitor's visit: a session id and where the visitor is.
struct Session {
    /// A UUIDv7 of the session's first event, made with it, as the browser SDK makes them:
    /// The Eye sorts events by session id, and time-ordered ids are what users send.
    id: Option<Uuid>,
    host: &'static str,
    page: usize,
    /// Events left before the visitor leaves and a new session takes the slot.
    remaining: u32,
    /// Whether the next event is the first of the session (a landing pageview).
    fresh: bool,
}

impl Session {
    fn new(rng: &mut Rng) -> Self {
        Self {
            id: None,
            host: rng.pick(&HOSTS),
            page: rng.below(PAGES.len()),
            remaining: 5 + rng.below(36) as u32,
            fresh: true,
        }
    }
}

/// Writes request bodies: a single event object, or an array of events.
pub struct Generator {
    rng: Rng,
    /// Concurrent visitors of this generator; a batch interleaves their events, as a
    /// back end that forwards several visitors' events would.
    sessions: Vec<Session>,
    buffer: Vec<u8>,
    /// Whether every event names its own `event_id`, as the shipped clients do.
    client_ids: bool,
}

impl Generator {
    pub fn new(seed: u64, sessions: usize) -> Self {
        let mut rng = Rng::new(seed);
        let sessions = (0..sessions.max(1))
            .map(|_| Session::new(&mut rng))
            .collect();
        Self {
            rng,
            sessions,
            buffer: Vec::with_capacity(64 * 1024),
            client_ids: false,
        }
    }

    /// Every event then starts with its own `event_id`, a UUIDv7 of its timestamp, as the
    /// shipped clients (the Rust and Python clients, the browser SDK) choose one for every
    /// event they build, so that a retry is recognised as one.
    pub fn with_client_ids(mut self) -> Self {
        self.client_ids = true;
        self
    }

    /// The body of one request of `events` events (an object when 1, else an array), with
    /// timestamps just before `now`. The returned slice lives until the next call.
    pub fn body(&mut self, events: usize, now: DateTime<Utc>) -> &[u8] {
        let mut buffer = std::mem::take(&mut self.buffer);
        buffer.clear();
        if events <= 1 {
            self.event(&mut buffer, now);
        } else {
            buffer.push(b'[');
            // A batch was collected over the last moments: oldest first, up to ~2 s back.
            for index in 0..events {
                if index > 0 {
                    buffer.push(b',');
                }
                let back = ((events - index) as i64) * 20_000 / events as i64;
                self.event(&mut buffer, now - Duration::microseconds(back * 100));
            }
            buffer.push(b']');
        }
        self.buffer = buffer;
        &self.buffer
    }

    fn event(&mut self, out: &mut Vec<u8>, at: DateTime<Utc>) {
        let slot = self.rng.below(self.sessions.len());
        let rng = &mut self.rng;
        let session = &mut self.sessions[slot];
        let id = *session.id.get_or_insert_with(|| {
            let random = rng.next_u64().to_le_bytes();
            let more = rng.next_u64().to_le_bytes();
            let mut bytes = [0; 10];
            bytes[..8].copy_from_slice(&random);
            bytes[8..].copy_from_slice(&more[..2]);
            uuid::Builder::from_unix_timestamp_millis(at.timestamp_millis().max(0) as u64, &bytes)
                .into_uuid()
        });
        // Landing: a pageview. Then mostly pageviews (moving on), some clicks, a few forms.
        let roll = rng.below(100);
        let kind = if session.fresh || roll < 65 {
            if !session.fresh {
                session.page = rng.below(PAGES.len());
            }
            Kind::Pageview
        } else if roll < 90 {
            Kind::CtaClick
        } else {
            Kind::Submit
        };
        let (path, title) = PAGES[session.page];
        let (category, name) = match kind {
            Kind::Pageview => ("page interaction", "pageview"),
            Kind::CtaClick => ("page interaction", "cta click"),
            Kind::Submit => ("form interaction", "submit"),
        };
        // Writing into a Vec cannot fail.
        out.push(b'{');
        if self.client_ids {
            let mut random = [0; 10];
            random[..8].copy_from_slice(&rng.next_u64().to_le_bytes());
            random[8..].copy_from_slice(&rng.next_u64().to_le_bytes()[..2]);
            let event_id = uuid::Builder::from_unix_timestamp_millis(
                at.timestamp_millis().max(0) as u64,
                &random,
            )
            .into_uuid();
            let _ = write!(out, r#""event_id":"{}","#, event_id.hyphenated());
        }
        let _ = write!(
            out,
            r#""session_id":"{}","category":"{category}","name":"{name}","data":{{"host":"{}","path":"{path}""#,
            id.hyphenated(),
            session.host,
        );
        match kind {
            Kind::Pageview => {
                let _ = write!(out, r#","title":"{title}""#);
                if session.fresh && rng.chance(0.6) {
                    let _ = write!(out, r#","referrer":"{}""#, rng.pick(&REFERRERS));
                }
                if rng.chance(0.2) {
                    let _ = write!(out, r#","query":"{}""#, rng.pick(&QUERIES));
                }
            }
            Kind::CtaClick => {
                let _ = write!(out, r#","element":"{}""#, rng.pick(&ELEMENTS));
            }
            Kind::Submit => {
                let first = rng.pick(&FIRST_NAMES);
                let last = rng.pick(&LAST_NAMES);
                let _ = write!(
                    out,
                    r#","form":{{"first_name":"{first}","last_name":"{last}","email":"{}.{}@example.com","zip":"{}","newsletter":{}}}"#,
                    first.to_ascii_lowercase(),
                    last.to_ascii_lowercase(),
                    rng.pick(&ZIP_CODES),
                    rng.chance(0.3),
                );
            }
        }
        // The README's format: `YYYY-MM-DD HH:MM:SS.ffffff`, UTC.
        let _ = write!(
            out,
            r#"}},"timestamp":"{}"}}"#,
            at.format("%Y-%m-%d %H:%M:%S%.6f")
        );
        session.fresh = false;
        session.remaining -= 1;
        if session.remaining == 0 {
            *session = Session::new(rng);
        }
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Pageview,
    CtaClick,
    Submit,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// The envelope and payload rules of the service and of `schemas/`, restated: if the
    /// generator drifts from them, this fails before a benchmark measures rejections.
    fn check_event(event: &Value, now: DateTime<Utc>) {
        let object = event.as_object().expect("an event is an object");
        let keys: Vec<&str> = object.keys().map(String::as_str).collect();
        let ids = usize::from(object.contains_key("event_id"));
        assert_eq!(
            keys.len(),
            5 + ids,
            "session_id, category, name, data, timestamp (and event_id): {keys:?}"
        );
        let session = object["session_id"].as_str().unwrap();
        assert!(Uuid::parse_str(session).is_ok());
        let timestamp = object["timestamp"].as_str().unwrap();
        let parsed = chrono::NaiveDateTime::parse_from_str(timestamp, "%Y-%m-%d %H:%M:%S%.f")
            .unwrap()
            .and_utc();
        assert!(parsed <= now && now - parsed < Duration::seconds(5));
        let data = object["data"].as_object().unwrap();
        let host = data["host"].as_str().unwrap();
        assert!(!host.is_empty() && host.len() <= 253);
        assert!(data["path"].as_str().unwrap().starts_with('/'));
        let allowed: &[&str] = match (
            object["category"].as_str().unwrap(),
            object["name"].as_str().unwrap(),
        ) {
            ("page interaction", "pageview") => &["host", "path", "title", "referrer", "query"],
            ("page interaction", "cta click") => {
                assert!(!data["element"].as_str().unwrap().is_empty());
                &["host", "path", "element"]
            }
            ("form interaction", "submit") => {
                let form = data["form"].as_object().unwrap();
                assert!(!form.is_empty());
                assert!(form.values().all(|v| !v.is_object() && !v.is_array()));
                &["host", "path", "form"]
            }
            other => panic!("unknown event type {other:?}"),
        };
        for key in data.keys() {
            assert!(allowed.contains(&key.as_str()), "unexpected data.{key}");
        }
    }

    #[test]
    fn single_events_are_valid_objects() {
        let mut generator = Generator::new(7, 4);
        for _ in 0..500 {
            let now = Utc::now();
            let event: Value = serde_json::from_slice(generator.body(1, now)).unwrap();
            check_event(&event, now);
        }
    }

    #[test]
    fn neighbouring_seeds_give_different_streams() {
        let firsts: std::collections::BTreeSet<u64> =
            (0..1024).map(|seed| Rng::new(seed).next_u64()).collect();
        assert_eq!(firsts.len(), 1024);
    }

    #[test]
    fn client_ids_are_distinct_uuid_v7s_of_the_event_time() {
        let mut generator = Generator::new(9, 8).with_client_ids();
        let now = Utc::now();
        let batch: Value = serde_json::from_slice(generator.body(500, now)).unwrap();
        let mut ids = std::collections::BTreeSet::new();
        for event in batch.as_array().unwrap() {
            check_event(event, now);
            let id: Uuid = event["event_id"].as_str().unwrap().parse().unwrap();
            assert_eq!(id.get_version_num(), 7, "{id}");
            let (seconds, _) = id.get_timestamp().unwrap().to_unix();
            assert!(now.timestamp() - seconds as i64 <= 5, "{id}");
            assert!(ids.insert(id), "{id} twice");
        }
        assert_eq!(ids.len(), 500);
        let single: Value = serde_json::from_slice(generator.body(1, now)).unwrap();
        check_event(&single, now);
        assert!(single["event_id"].is_string());
    }

    #[test]
    fn batches_are_valid_arrays_of_every_type() {
        let mut generator = Generator::new(42, 16);
        let now = Utc::now();
        let batch: Value = serde_json::from_slice(generator.body(1000, now)).unwrap();
        let events = batch.as_array().unwrap();
        assert_eq!(events.len(), 1000);
        let mut names = std::collections::BTreeSet::new();
        let mut sessions = std::collections::BTreeSet::new();
        for event in events {
            check_event(event, now);
            names.insert(event["name"].as_str().unwrap().to_owned());
            let session: Uuid = event["session_id"].as_str().unwrap().parse().unwrap();
            assert_eq!(session.get_version_num(), 7, "{session}");
            // A session's id carries the time of its first event: never after its events.
            let (seconds, nanos) = session.get_timestamp().unwrap().to_unix();
            let started = DateTime::from_timestamp(seconds as i64, nanos).unwrap();
            let at = chrono::NaiveDateTime::parse_from_str(
                event["timestamp"].as_str().unwrap(),
                "%Y-%m-%d %H:%M:%S%.f",
            )
            .unwrap()
            .and_utc();
            assert!(started <= at, "{session} starts after {at}");
            sessions.insert(session);
        }
        assert_eq!(names.len(), 3, "{names:?}");
        // Sessions end and new ones begin.
        assert!(sessions.len() > 16, "{}", sessions.len());
    }
}
