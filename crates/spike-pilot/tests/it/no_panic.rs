//! No-panic properties for the pilot's own parsers of files and terminal input: the policy
//! YAML subset (`spike policy apply --file`) and the recovery-shard line
//! (`spike operator restore`). The coverage-guided versions live in `fuzz/` (cargo-fuzz).

use proptest::prelude::*;
use spike_pilot::commands::operator::parse_restore_input;
use spike_pilot::commands::policy::parse_policy_yaml;

fn config() -> ProptestConfig {
    ProptestConfig::with_cases(384)
}

/// One line of a policy file: known keys, odd quoting, comments, list items, tabs.
fn yaml_line() -> impl Strategy<Value = String> {
    prop_oneof![
        "(name|spiffeidPattern|pathPattern|permissions|other|\"name\")[ \t]?:[ \t]?(\"[^\"\n]{0,8}\"?|'[^'\n]{0,8}'?|[a-z#:\\[\\],'\" ]{0,12})",
        "[ \t]{0,2}-[ \t]?(read|write|\"list\"|'super'|#|[a-z\"']{0,5})",
        "permissions: \\[[a-z,\"' ]{0,20}\\]?",
        "(---|#.*|[ \t]*)",
        "\\PC{0,16}",
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn policy_yaml_never_panics(lines in proptest::collection::vec(yaml_line(), 0..10)) {
        let text = lines.join("\n");
        if let Ok(doc) = parse_policy_yaml(&text) {
            prop_assert!(!doc.name.is_empty());
            prop_assert!(!doc.spiffe_id_pattern.is_empty());
            prop_assert!(!doc.path_pattern.is_empty());
            prop_assert!(!doc.permissions.is_empty());
        }
    }

    #[test]
    fn policy_yaml_never_panics_on_arbitrary_text(text in any::<String>()) {
        let _ = parse_policy_yaml(&text);
    }

    #[test]
    fn restore_input_never_panics(line in prop_oneof![
        any::<String>(),
        "[ \t\n]{0,2}spike:[+-]?[0-9]{0,6}:[0-9a-fA-FxX]{62,66}[ \t\r\n]{0,2}",
        "\\PC{0,6}:\\PC{0,6}:\\PC{0,66}",
    ]) {
        if let Ok(shard) = parse_restore_input(&line) {
            prop_assert!(shard.id() != 0);
        }
    }
}
