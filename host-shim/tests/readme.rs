//! Keeps the README's JSON examples true: each flow snippet runs with
//! `host-shim run` on the built-in broker and passes, and each other JSON
//! snippet (one object, or one object per line) is a valid configuration
//! of some kind by `host-shim validate`. (Its shell lines are parsed by the
//! binary's own tests, with the command line's definitions.)

mod support;

use serde_json::Value as Json;
use support::{host_shim, host_shim_with_input, json_lines, temp_file, workspace};

/// The contents of each ```json block of the README.
fn json_blocks() -> Vec<String> {
    let readme = std::fs::read_to_string(workspace().join("README.md")).unwrap();
    readme
        .split("```json\n")
        .skip(1)
        .map(|rest| rest.split("```").next().unwrap_or_default().to_owned())
        .collect()
}

/// The JSON objects of a block: the whole block, or one per line.
fn objects(block: &str) -> Vec<String> {
    if serde_json::from_str::<Json>(block).is_ok() {
        return vec![block.to_owned()];
    }
    block
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            serde_json::from_str::<Json>(line)
                .unwrap_or_else(|e| panic!("README: not JSON: {line}: {e}"));
            line.to_owned()
        })
        .collect()
}

#[test]
fn every_flow_snippet_of_the_readme_runs_and_passes() {
    let mut flows = 0;
    for (i, block) in json_blocks().iter().enumerate() {
        for object in objects(block) {
            let json: Json = serde_json::from_str(&object).unwrap();
            if json.get("steps").is_none() {
                continue;
            }
            let file = temp_file(&format!("readme-{i}.flow.json"), object.as_bytes());
            let out = host_shim(&["run", file.to_str().unwrap()]);
            assert_eq!(
                out.code,
                Some(0),
                "README flow {i}:\n{object}\nstdout:\n{}\nstderr:\n{}",
                out.stdout,
                out.stderr
            );
            assert!(out.stderr.contains("passed: "), "{}", out.stderr);
            assert!(!json_lines(&out.stdout).is_empty(), "{}", out.stdout);
            flows += 1;
        }
    }
    assert!(flows >= 1, "no flow snippet in the README");
}

#[test]
fn every_configuration_snippet_of_the_readme_is_valid() {
    let mut configs = 0;
    for block in json_blocks() {
        for object in objects(&block) {
            let json: Json = serde_json::from_str(&object).unwrap();
            if json.get("steps").is_some() {
                continue;
            }
            let valid_as = ["connection", "send", "listen", "broker"]
                .into_iter()
                .find(|kind| {
                    host_shim_with_input(&["validate", kind, "-"], object.as_bytes()).code
                        == Some(0)
                });
            assert!(valid_as.is_some(), "README: valid as no kind: {object}");
            configs += 1;
        }
    }
    assert!(configs >= 3, "only {configs} configuration snippets");
}
