//! What ccfan asks a container engine outside an attempt: `ccfan doctor`'s check that it answers and holds the
//! image, and recovery's removal of the containers a killed ccfan left.

use bollard::query_parameters::{ListContainersOptions, RemoveContainerOptions};

use super::container::{Engine, TOKEN_LABEL, block_on, socket};
use crate::policy::{ContainerSettings, SandboxBackend};

/// `ccfan doctor`: whether the engine answers and holds the image (`Ok`: what it is), or why not, with the fix.
pub fn check(backend: SandboxBackend, settings: &ContainerSettings) -> Result<String, String> {
    let start = match backend {
        SandboxBackend::Docker => "start the Docker daemon".to_string(),
        _ => format!(
            "start it: `podman system service --time=0 {}`",
            socket(backend, settings)
        ),
    };
    block_on(async {
        let engine = match Engine::connect(backend, settings) {
            Ok(engine) => engine,
            Err(error) => return Ok(Err(error.to_string())),
        };
        let version = match engine.docker.version().await {
            Ok(version) => version,
            Err(error) => {
                return Ok(Err(format!(
                    "the {} engine does not answer at {}: {error} ({start}, or set [sandbox.container] socket)",
                    engine.name, engine.socket
                )));
            }
        };
        if let Err(error) = engine.docker.inspect_image(&settings.image).await {
            return Ok(Err(format!(
                "the image {} is not there: {error} (build it from the repository's Containerfile; \
                 scripts/worker-image.sh builds one from local files)",
                settings.image
            )));
        }
        Ok(Ok(format!(
            "{} {} at {}, image {}",
            engine.name,
            version.version.unwrap_or_default(),
            engine.socket,
            settings.image
        )))
    })
    .unwrap_or_else(|error: super::container::ContainerError| Err(error.to_string()))
}

/// Removes the containers left with label `token` (a crash of ccfan mid-attempt); returns how many.
pub fn remove_leftovers(
    backend: SandboxBackend,
    settings: &ContainerSettings,
    token: &str,
) -> usize {
    let removed = block_on(async {
        {
            let engine = Engine::connect(backend, settings)?;
            let filters = std::collections::HashMap::from([(
                "label".to_string(),
                vec![format!("{TOKEN_LABEL}={token}")],
            )]);
            let listed = engine
                .docker
                .list_containers(Some(ListContainersOptions {
                    all: true,
                    filters: Some(filters),
                    ..Default::default()
                }))
                .await
                .map_err(engine.failed("list containers"))?;
            let mut removed = 0;
            for container in listed {
                if let Some(id) = container.id
                    && engine
                        .docker
                        .remove_container(
                            &id,
                            Some(RemoveContainerOptions {
                                force: true,
                                ..Default::default()
                            }),
                        )
                        .await
                        .is_ok()
                {
                    removed += 1;
                }
            }
            Ok(removed)
        }
    });
    removed.unwrap_or_else(|error: super::container::ContainerError| {
        tracing::warn!("cannot remove containers left by {token}: {error}");
        0
    })
}
