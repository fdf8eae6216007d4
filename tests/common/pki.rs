//! A test PKI (rcgen): a CA, the shim's server certificate for `localhost`, an apiserver's client
//! certificate (CN `apiserver-prod`) and one signed by a CA the shim does not trust.

use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair};
use std::path::Path;

pub struct Pki {
    pub ca_pem: String,
    /// (certificate PEM, key PEM)
    pub server: (String, String),
    pub client: (String, String),
    pub stranger: (String, String),
}

pub fn pki() -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "kaudit test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |sans: Vec<String>, cn: &str, issuer: &Issuer<'_, KeyPair>| {
        let mut p = CertificateParams::new(sans).unwrap();
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().unwrap();
        (p.signed_by(&key, issuer).unwrap().pem(), key.serialize_pem())
    };
    let server = leaf(vec!["localhost".into()], "kaudit", &issuer);
    let client = leaf(vec![], "apiserver-prod", &issuer);
    // Signed by a CA the shim does not trust.
    let mut other_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    other_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let other = Issuer::new(other_params, KeyPair::generate().unwrap());
    let stranger = leaf(vec![], "apiserver-prod", &other);
    Pki {
        ca_pem: ca_cert.pem(),
        server,
        client,
        stranger,
    }
}

impl Pki {
    /// Writes the server's certificate and key and the CA into `dir`; returns a `[shim] tls`
    /// inline table for them (with the CA as the client CA when `mtls`).
    pub fn shim_tls(&self, dir: &Path, mtls: bool) -> String {
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path.display().to_string()
        };
        let (cert, key, ca) = (
            write("server.pem", &self.server.0),
            write("server.key", &self.server.1),
            write("ca.pem", &self.ca_pem),
        );
        if mtls {
            format!(r#"{{ cert_file = "{cert}", key_file = "{key}", client_ca_file = "{ca}" }}"#)
        } else {
            format!(r#"{{ cert_file = "{cert}", key_file = "{key}" }}"#)
        }
    }

    /// A client that trusts the CA, as an apiserver's webhook kubeconfig with
    /// `certificate-authority` does (HTTP/2 by ALPN), presenting `identity` if given.
    pub fn client(&self, identity: Option<&(String, String)>) -> reqwest::Client {
        let mut b = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).unwrap())
            .use_rustls_tls();
        if let Some((cert, key)) = identity {
            b = b.identity(reqwest::Identity::from_pem(format!("{cert}{key}").as_bytes()).unwrap());
        }
        b.build().unwrap()
    }
}
