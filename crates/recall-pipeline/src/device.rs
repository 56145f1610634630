//! The candle device the computing stages use: a pipeline file's top-level `device = "cpu"`
//! (the default), `"cuda"` or `"cuda:N"`; `cargo xtask pipeline --device ...` overrides it for
//! one run. A CUDA device needs a build with the `cuda` feature (`scripts/build-cuda.sh`).

use std::fmt;
use std::str::FromStr;

use anyhow::{Result, bail};
use candle_core::Device;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Which device the computing stages (train, export, evaluate) use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    #[default]
    Cpu,
    /// The CUDA device of this ordinal.
    Cuda(usize),
}

impl FromStr for DeviceChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" => Ok(DeviceChoice::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceChoice::Cuda)
                .ok_or_else(|| {
                    format!("unknown device {s:?}: use \"cpu\", \"cuda\" or \"cuda:N\"")
                }),
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceChoice::Cpu => f.write_str("cpu"),
            DeviceChoice::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl Serialize for DeviceChoice {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DeviceChoice {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl DeviceChoice {
    pub fn is_cpu(&self) -> bool {
        *self == DeviceChoice::Cpu
    }

    /// Opens the device, or says why not: a CPU-only build, or no such CUDA device.
    pub fn open(self) -> Result<Device> {
        match self {
            DeviceChoice::Cpu => Ok(Device::Cpu),
            DeviceChoice::Cuda(n) => {
                if !candle_core::utils::cuda_is_available() {
                    bail!(
                        "device = \"{self}\" but this build has no CUDA support: build with \
                         `bash scripts/build-cuda.sh` (the `cuda` feature; it fetches nvcc from PyPI) \
                         and run that binary, or set device = \"cpu\""
                    );
                }
                Device::new_cuda(n).map_err(|e| {
                    anyhow::anyhow!(
                        "device = \"{self}\": no usable CUDA device {n} ({e}); check \
                         `nvidia-smi` and that LD_LIBRARY_PATH reaches libcublas and libcurand \
                         (scripts/build-cuda.sh prints it)"
                    )
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse_and_bad_names_are_refused() {
        assert_eq!("cpu".parse(), Ok(DeviceChoice::Cpu));
        assert_eq!("cuda".parse(), Ok(DeviceChoice::Cuda(0)));
        assert_eq!("cuda:3".parse(), Ok(DeviceChoice::Cuda(3)));
        for bad in ["gpu", "cuda:", "cuda:x", "CUDA"] {
            let err = bad.parse::<DeviceChoice>().unwrap_err();
            assert!(err.contains("\"cpu\", \"cuda\" or \"cuda:N\""), "{err}");
        }
        assert_eq!(DeviceChoice::Cuda(1).to_string(), "cuda:1");
    }

    /// On a build without the `cuda` feature (every CI build), asking for CUDA fails with the
    /// key and what to do.
    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_on_a_cpu_build_is_refused_with_the_key_and_the_fix() {
        let err = DeviceChoice::Cuda(0).open().unwrap_err().to_string();
        assert!(
            err.contains("device = \"cuda:0\"") && err.contains("scripts/build-cuda.sh"),
            "{err}"
        );
        assert!(DeviceChoice::Cpu.open().unwrap().is_cpu());
    }
}
