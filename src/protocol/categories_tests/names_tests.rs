//! Short names, special categories, and the example records' declared categories.

use super::*;

#[test]
fn category_set_helpers() {
    let derived = set(&[C::Biometric, C::Identity, C::CaseNarrative]);
    let declared = set(&[C::Identity, C::CaseNarrative, C::Contact]);
    assert!(!derived.is_subset(&declared));
    assert_eq!(derived.difference(&declared), set(&[C::Biometric]));
    assert!(derived.difference(&declared).has_special());
    assert!(!declared.has_special());
    assert!(set(&[C::Identity]).is_subset(&declared));
    assert!(CategorySet::new().is_subset(&declared));
    assert_eq!(derived.to_vec_i32(), vec![1, 10, 20]);
    assert_eq!(
        derived.iter().collect::<Vec<_>>(),
        vec![C::Identity, C::CaseNarrative, C::Biometric]
    );
    assert_eq!((&derived).into_iter().count(), 3);
    assert_eq!(derived.len(), 3);
    assert!(derived.contains(C::Biometric) && !derived.contains(C::Contact));
    assert_eq!(derived.to_string(), "identity, case_narrative, biometric");
    assert_eq!(CategorySet::new().to_string(), "none");

    let mut s = CategorySet::new();
    assert!(!s.insert(C::Unspecified));
    assert!(s.is_empty());
    assert!(s.insert(C::Minor));
    assert!(!s.insert(C::Minor));
    assert_eq!(set(&[C::Unspecified, C::Minor]), s);
}

// -- names ---------------------------------------------------------------

/// Every value the generated enum accepts, so the tests notice a value
/// added to the proto but not to `ALL_CATEGORIES`.
fn enum_categories() -> Vec<DataCategory> {
    (0..256)
        .filter_map(|v| DataCategory::try_from(v).ok())
        .collect()
}

fn enum_kinds() -> Vec<RecordKind> {
    (0..256)
        .filter_map(|v| RecordKind::try_from(v).ok())
        .collect()
}

#[test]
fn category_short_names_round_trip() {
    let all = enum_categories();
    assert_eq!(all.len(), ALL_CATEGORIES.len() + 1);
    for c in all {
        let name = short_name(c);
        assert_eq!(
            c.as_str_name()
                .strip_prefix("DATA_CATEGORY_")
                .map(str::to_lowercase),
            Some(name.to_owned())
        );
        if c == C::Unspecified {
            assert_eq!(parse_short_name(name), None);
        } else {
            assert_eq!(parse_short_name(name), Some(c));
        }
    }
    assert_eq!(ALL_CATEGORIES.to_vec(), enum_categories()[1..].to_vec());
    assert_eq!(parse_short_name("IDENTITY"), None);
    assert_eq!(parse_short_name("DATA_CATEGORY_IDENTITY"), None);
    assert_eq!(parse_short_name(""), None);
}

#[test]
fn kind_short_names_round_trip() {
    let all = enum_kinds();
    assert_eq!(all.len(), ALL_KINDS.len() + 1);
    for k in all {
        let name = kind_short_name(k);
        assert_eq!(
            k.as_str_name()
                .strip_prefix("RECORD_KIND_")
                .map(str::to_lowercase),
            Some(name.to_owned())
        );
        if k == RecordKind::Unspecified {
            assert_eq!(parse_kind_short_name(name), None);
        } else {
            assert_eq!(parse_kind_short_name(name), Some(k));
        }
    }
    assert_eq!(ALL_KINDS.to_vec(), enum_kinds()[1..].to_vec());
    // The names DOMAIN.md uses.
    for name in [
        "mla_request",
        "mla_response",
        "information_request",
        "information_response",
        "missing_person_trace",
        "trace_result",
        "wanted_alert",
        "intelligence_report",
        "migrant_registration",
        "jit_evidence",
        "statistics",
        "permission_request",
        "permission_grant",
    ] {
        assert!(parse_kind_short_name(name).is_some(), "{name}");
    }
}

#[test]
fn special_categories_are_exactly_the_twenties() {
    for c in enum_categories() {
        assert_eq!(is_special(c), c as i32 >= 20, "{c:?}");
    }
}

// -- example records -----------------------------------------------------

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/records");

/// One row of the README's table: the file, its kind, its categories as
/// parsed, and the categories cell as written.
struct Row {
    file: String,
    kind: RecordKind,
    categories: CategorySet,
    cell: String,
}

fn readme_rows() -> Vec<Row> {
    let readme = std::fs::read_to_string(format!("{EXAMPLES}/README.md"))
        .expect("examples/records/README.md is readable");
    let unquote = |cell: &str| cell.trim().trim_matches('`').to_owned();
    let mut rows = Vec::new();
    for line in readme.lines() {
        let cells: Vec<&str> = line.split('|').collect();
        if cells.len() != 6 || !unquote(cells[1]).ends_with(".json") {
            continue;
        }
        let file = unquote(cells[1]);
        let kind = parse_kind_short_name(&unquote(cells[3]))
            .unwrap_or_else(|| panic!("{file}: bad kind {:?}", cells[3]));
        let categories = match cells[4].trim() {
            "none" => CategorySet::new(),
            list => list
                .split(',')
                .map(|name| {
                    parse_short_name(&unquote(name))
                        .unwrap_or_else(|| panic!("{file}: bad category {name:?}"))
                })
                .collect(),
        };
        let cell = cells[4].replace('`', "").trim().to_owned();
        rows.push(Row {
            file,
            kind,
            categories,
            cell,
        });
    }
    rows
}

#[test]
fn example_records_derive_what_their_readme_says() {
    let rows = readme_rows();
    let mut on_disk: Vec<String> = std::fs::read_dir(EXAMPLES)
        .expect("examples/records is readable")
        .map(|e| {
            e.expect("directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.ends_with(".json"))
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = rows.iter().map(|r| r.file.clone()).collect();
    listed.sort();
    assert_eq!(on_disk, listed, "README table and files differ");
    assert_eq!(on_disk.len(), 8);

    for row in rows {
        let file = &row.file;
        let text = std::fs::read_to_string(format!("{EXAMPLES}/{file}"))
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        let record: v1::CaseRecord =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(record_kind(&record), Some(row.kind), "{file}");
        let derived = derive(&record);
        assert_eq!(
            derived, row.categories,
            "{file}: README says `{}`, code derives `{derived}`",
            row.cell
        );
        // Enum order keeps the README comparable with the demo's output.
        assert_eq!(row.cell, derived.to_string(), "{file}: README order");

        // Canonical proto3 JSON: re-encoding gives back the same document,
        // so no field is misspelt, defaulted or in a non-canonical form.
        let original: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        let reencoded = serde_json::to_value(&record).expect("encodable");
        assert_eq!(original, reencoded, "{file} is not canonical proto3 JSON");
    }
}

#[test]
fn scenario_six_lie_is_visible_as_a_difference() {
    let text = std::fs::read_to_string(format!("{EXAMPLES}/fingerprints.json")).expect("readable");
    let record: v1::CaseRecord = serde_json::from_str(&text).expect("valid record");
    let declared = set(&[C::Identity]);
    let undeclared = derive(&record).difference(&declared);
    assert!(undeclared.contains(C::Biometric));
    assert!(undeclared.has_special());
}

#[test]
fn declared_lists_are_unique_known_and_bounded() {
    let all: Vec<i32> = ALL_CATEGORIES.iter().map(|c| *c as i32).collect();
    assert_eq!(
        parse_declared("declared_categories", &all).map(|s| s.len()),
        Ok(CATEGORY_COUNT)
    );
    assert_eq!(
        parse_declared("declared_categories", &[]),
        Ok(CategorySet::new())
    );
    let too_many: Vec<i32> = all.iter().cycle().take(300_003).copied().collect();
    assert_eq!(
        parse_declared("declared_categories", &too_many)
            .unwrap_err()
            .to_string(),
        "declared_categories has 300003 entries; the limit is 20"
    );
    let twice = [C::Identity as i32, C::Health as i32, C::Identity as i32];
    assert_eq!(
        parse_declared("declared_categories", &twice),
        Err(ListError::Twice(C::Identity))
    );
    assert_eq!(
        ListError::Twice(C::Identity).to_string(),
        "data category identity listed twice"
    );
    for bad in [0, 13, -1, 999] {
        assert_eq!(
            parse_declared("declared_categories", &[C::Health as i32, bad]),
            Err(ListError::Unknown(bad))
        );
    }
}
