//! Certificates for an HTTPS mock upstream: a throwaway certificate authority and a server
//! certificate it signed for `localhost` (the name `MockUpstream::url` uses over TLS).
//! Shared by the test suite and the benchmark (`examples/bench.rs` includes this file).

/// PEM texts of a new test CA, and of a certificate and key for `localhost` it signed.
pub struct TestCerts {
    pub ca: String,
    pub cert: String,
    pub key: String,
}

pub fn test_certs() -> TestCerts {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair,
    };
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "crs test CA");
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("CA key"))
        .expect("CA certificate");
    let key = KeyPair::generate().expect("server key");
    let mut leaf = CertificateParams::new(vec!["localhost".to_owned()]).expect("server names");
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = leaf.signed_by(&key, &ca).expect("server certificate");
    TestCerts {
        ca: ca.pem(),
        cert: cert.pem(),
        key: key.serialize_pem(),
    }
}
