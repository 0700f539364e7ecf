//! Payload schema validation: any JSON `data` against each shipped event type's schema. Every
//! problem must name a path under `data` and a code, and validation must not panic or hang
//! on any value (deep nesting, huge numbers, odd strings).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use the_eye::validate::schemas::SchemaSet;

fn schemas() -> &'static SchemaSet {
    static SCHEMAS: OnceLock<SchemaSet> = OnceLock::new();
    SCHEMAS.get_or_init(|| {
        SchemaSet::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas"))
            .expect("the shipped schemas")
    })
}

fuzz_target!(|input: &[u8]| {
    let Ok(data) = serde_json::from_slice::<serde_json::Value>(input) else {
        return;
    };
    for schema in schemas().types() {
        for problem in schema.check(&data) {
            assert!(problem.field.starts_with("data"), "{}", problem.field);
            assert!(!problem.code.is_empty());
        }
    }
});
