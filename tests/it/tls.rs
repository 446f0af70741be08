//! `engine run` over https: the platform's roots (`SSL_CERT_FILE`, `SSL_CERT_DIR`) decide, and
//! they are read on the first https handshake, not at start-up (`engine-runtime/src/tls.rs`).
//! The server is rustls on loopback with the certificates of `tests/fixtures/tls/` (`gen.sh`).

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::support::{engine, repo_root};

/// Serves `{"pong": true}` over TLS to every connection; returns its port.
async fn tls_server() -> u16 {
    let dir = repo_root().join("tests/fixtures/tls");
    let certs = CertificateDer::pem_file_iter(dir.join("server.pem"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).unwrap();
    let config = ServerConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A client that rejects the certificate ends the handshake: nothing to answer.
                let Ok(mut stream) = acceptor.accept(stream).await else {
                    return;
                };
                let mut request = Vec::new();
                let mut buffer = [0_u8; 1024];
                while !request.windows(4).any(|window| window == b"\r\n\r\n") {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(read) => request.extend_from_slice(&buffer[..read]),
                    }
                }
                let body = r#"{"pong": true}"#;
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    port
}

/// Runs `ping` against `base_url` trusting only the certificates in `roots`. It blocks: the
/// tests run on a multi-thread runtime so that the server answers meanwhile.
fn ping(base_url: &str, roots: &str) -> assert_cmd::assert::Assert {
    let dir = tempfile::tempdir().unwrap();
    let instance = dir.path().join("instance.json");
    fs_err::write(
        &instance,
        serde_json::json!({ "base.url": base_url }).to_string(),
    )
    .unwrap();
    engine()
        .args([
            "run",
            "tests/fixtures/run/tls/connector.json",
            "ping",
            "--config",
        ])
        .arg(&instance)
        .env(
            "SSL_CERT_FILE",
            repo_root().join("tests/fixtures/tls").join(roots),
        )
        .env_remove("SSL_CERT_DIR")
        .assert()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn https_answers_when_the_roots_trust_the_vendor() {
    let port = tls_server().await;
    let output = ping(&format!("https://localhost:{port}"), "ca.pem")
        .success()
        .get_output()
        .clone();
    let data: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(data, serde_json::json!({"pong": true}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn https_fails_when_no_root_trusts_the_vendor() {
    let port = tls_server().await;
    let output = ping(&format!("https://localhost:{port}"), "other-ca.pem")
        .failure()
        .get_output()
        .clone();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("invalid peer certificate: UnknownIssuer"),
        "the error says the certificate was refused:\n{stderr}"
    );
    assert!(
        stderr.contains("hint: the vendor's TLS certificate is not trusted here"),
        "the hint says what to do:\n{stderr}"
    );
    assert!(output.stdout.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn plain_http_needs_no_roots() {
    // A root file that does not exist: loading the roots would fail, but http never loads them.
    let server = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::path("/ping"))
        .respond_with(
            wiremock::ResponseTemplate::new(200).set_body_json(serde_json::json!({"pong": 1})),
        )
        .mount(&server)
        .await;
    ping(&server.uri(), "no-such-file.pem").success();
}
