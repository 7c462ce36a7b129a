//! PostgreSQL over TLS, against the local server as `.ci/run` configures
//! it: a CA and a certificate for `localhost`, a role (`wfstate_tls`) that
//! pg_hba admits over TLS only, and one (`wfstate_plain`) it admits without
//! TLS only. Skipped, saying so, where `WFSTATE_TEST_PG_TLS_CA` is not set;
//! in CI (`WFSTATE_TEST_PG_REQUIRED=1`) that fails instead.

mod common;

use common::{BIN, code, text};
use std::process::{Command, Output};

struct Tls {
    ca: String,
    other_ca: String,
}

fn tls() -> Option<Tls> {
    match (
        std::env::var("WFSTATE_TEST_PG_TLS_CA"),
        std::env::var("WFSTATE_TEST_PG_TLS_OTHER_CA"),
    ) {
        (Ok(ca), Ok(other_ca)) => Some(Tls { ca, other_ca }),
        _ => {
            let required = std::env::var("WFSTATE_TEST_PG_REQUIRED").is_ok_and(|v| v == "1");
            assert!(
                !required,
                "the TLS tests are required here but WFSTATE_TEST_PG_TLS_CA is not set"
            );
            println!(
                "SKIPPED: set WFSTATE_TEST_PG_TLS_CA and WFSTATE_TEST_PG_TLS_OTHER_CA (.ci/run does)"
            );
            None
        }
    }
}

/// `wfstate --store URL state update <wf> --incr /n` as `role` on `host`,
/// with `params` in the URL, an empty HOME (no ~/.postgresql or
/// ~/.pgpass) and no PG variables.
fn update(role: &str, host: &str, params: &str, workflow: &str) -> Output {
    let home = tempfile::tempdir().unwrap();
    let url = format!(
        "postgres://{role}:{role}@{host}:5432/wfstate_test?options=-csearch_path%3D{role}_{workflow}&{params}"
    );
    let init = Command::new(BIN)
        .args(["--store", &url, "init"])
        .env("HOME", home.path())
        .env_remove("PGSSLMODE")
        .env_remove("PGSSLROOTCERT")
        .env_remove("PGPASSWORD")
        .output()
        .unwrap();
    if !init.status.success() {
        return init;
    }
    Command::new(BIN)
        .args(["--store", &url, "state", "update", workflow, "--incr", "/n"])
        .env("HOME", home.path())
        .env_remove("PGSSLMODE")
        .env_remove("PGSSLROOTCERT")
        .env_remove("PGPASSWORD")
        .output()
        .unwrap()
}

fn assert_ok(out: &Output, what: &str) {
    assert_eq!(code(out), 0, "{what}: {}", text(&out.stderr));
}

fn assert_refused(out: &Output, what: &str, says: &str) {
    assert_ne!(code(out), 0, "{what} connected");
    let stderr = text(&out.stderr);
    assert!(stderr.contains(says), "{what}: {stderr}");
}

#[test]
fn tls_modes_check_what_libpq_checks() {
    let Some(tls) = tls() else { return };
    let ca = format!("sslrootcert={}", tls.ca);
    let other = format!("sslrootcert={}", tls.other_ca);

    // A role admitted over TLS only works with TLS and is refused without.
    assert_ok(
        &update("wfstate_tls", "localhost", "sslmode=require", "require"),
        "require",
    );
    assert_ok(
        &update("wfstate_tls", "localhost", "", "prefer"),
        "prefer (the default)",
    );
    assert_ok(
        &update(
            "wfstate_tls",
            "localhost",
            &format!("sslmode=verify-full&{ca}"),
            "full",
        ),
        "verify-full with the CA",
    );
    assert_ok(
        &update(
            "wfstate_tls",
            "127.0.0.1",
            &format!("sslmode=verify-ca&{ca}"),
            "ca",
        ),
        "verify-ca, which does not check the name",
    );
    assert_refused(
        &update("wfstate_tls", "localhost", "sslmode=disable", "off"),
        "the TLS-only role without TLS",
        "no encryption",
    );

    // Each check, failing, says which one it is.
    assert_refused(
        &update(
            "wfstate_tls",
            "127.0.0.1",
            &format!("sslmode=verify-full&{ca}"),
            "name",
        ),
        "verify-full against a name not in the certificate",
        "does not name the host",
    );
    assert_refused(
        &update(
            "wfstate_tls",
            "localhost",
            &format!("sslmode=verify-full&{other}"),
            "issuer",
        ),
        "verify-full with another CA",
        "not signed by a CA in sslrootcert",
    );
    let without = update("wfstate_tls", "localhost", "sslmode=verify-full", "noca");
    assert_refused(
        &without,
        "verify-full without a CA",
        "needs the certificate of the CA",
    );
    assert_eq!(code(&without), 2);

    // `disable` never negotiates TLS: a role that pg_hba refuses over TLS
    // connects with it, and is refused when TLS is required.
    assert_ok(
        &update("wfstate_plain", "localhost", "sslmode=disable", "plain"),
        "disable",
    );
    assert_refused(
        &update("wfstate_plain", "localhost", "sslmode=require", "plainreq"),
        "the plain-only role with TLS",
        "wfstate_plain",
    );
}

#[test]
fn the_password_can_come_from_pgpassword_or_a_private_pgpass_file() {
    let Some(_) = tls() else { return };
    let url = "postgres://wfstate_tls@localhost:5432/wfstate_test?options=-csearch_path%3Dwfstate_tls_pass&sslmode=require";
    let run = |home: &std::path::Path, password: Option<&str>| {
        let mut cmd = Command::new(BIN);
        cmd.args(["--store", url, "init"])
            .env("HOME", home)
            .env_remove("PGPASSWORD")
            .env_remove("PGPASSFILE");
        if let Some(p) = password {
            cmd.env("PGPASSWORD", p);
        }
        cmd.output().unwrap()
    };
    let home = tempfile::tempdir().unwrap();
    assert_refused(&run(home.path(), None), "no password anywhere", "password");
    assert_ok(&run(home.path(), Some("wfstate_tls")), "PGPASSWORD");
    let pgpass = home.path().join(".pgpass");
    std::fs::write(
        &pgpass,
        "# host:port:db:user:password\nlocalhost:5432:wfstate_test:wfstate_tls:wfstate_tls\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert_refused(
        &run(home.path(), None),
        "a .pgpass others can read (ignored, as libpq does)",
        "password",
    );
    std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_ok(&run(home.path(), None), "a private .pgpass");
}
