'use strict';

// Loads rcluster's native addon: the one built in this folder (a clone, `npm run build`), else
// the platform package npm installed beside rcluster (`rcluster-linux-x64-gnu`, ...). Anything
// else is an error that says what is missing and how to get it.

const fs = require('node:fs');
const path = require('node:path');
const { rclusterError } = require('./errors');
const { SUPPORTED, platformName } = require('./platform');

const { version } = require('../package.json');

function load() {
  const platform = platformName();
  // A build from source (a clone, or a platform without a prebuilt package) comes first.
  const local = path.join(__dirname, `rcluster.${platform}.node`);
  if (fs.existsSync(local)) return require(local);
  if (!SUPPORTED.includes(platform)) {
    const why =
      process.platform === 'linux'
        ? `there is no prebuilt binary for ${platform}; build it from source (Rust and cargo, then \`npm run build\` in the rcluster package)`
        : `rcluster runs on Linux only (it uses pidfd, SO_REUSEPORT and PR_SET_PDEATHSIG), and this is ${platform}`;
    throw rclusterError('ERR_RCLUSTER_UNSUPPORTED_PLATFORM', `${why}; prebuilt binaries: ${SUPPORTED.join(', ')}`);
  }

  const name = `rcluster-${platform}`;
  let manifest;
  try {
    manifest = require(`${name}/package.json`);
  } catch {
    throw rclusterError(
      'ERR_RCLUSTER_NO_BINARY',
      `rcluster's native addon for ${platform} is not installed: the package ${name}@${version} is missing. ` +
        `npm installs it with rcluster unless optional dependencies are left out (--omit=optional, --no-optional) ` +
        `or node_modules came from another platform; run \`npm install ${name}@${version}\`, or build from source ` +
        '(Rust and cargo, then `npm run build` in the rcluster package)',
    );
  }
  if (manifest.version !== version) {
    throw rclusterError(
      'ERR_RCLUSTER_NO_BINARY',
      `rcluster ${version} needs ${name}@${version}, but ${name}@${manifest.version} is installed; run \`npm install ${name}@${version}\``,
    );
  }
  return require(name);
}

module.exports = load();
