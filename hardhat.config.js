// Hardhat compiles the contracts and runs their tests. Compiler version and settings come from
// solidity/compiler.json, the file the Python build (dul/contracts/build.py) reads too, so both
// produce identical bytecode (tests/integration/test_hardhat_parity.py checks it).
const path = require("node:path");
const { subtask } = require("hardhat/config");
const { TASK_COMPILE_SOLIDITY_GET_SOLC_BUILD } = require("hardhat/builtin-tasks/task-names");

require("@nomicfoundation/hardhat-ethers");
require("@nomicfoundation/hardhat-chai-matchers");

const compiler = require("./solidity/compiler.json");

// No compiler download: these machines are offline, so use the solcjs build pinned in
// package.json (npm `solc`) and refuse any other version instead of fetching it.
subtask(TASK_COMPILE_SOLIDITY_GET_SOLC_BUILD, async ({ solcVersion }) => {
  const solc = require("solc");
  const longVersion = solc.version();
  if (!longVersion.startsWith(`${solcVersion}+`)) {
    throw new Error(
      `solidity/compiler.json wants solc ${solcVersion} but npm solc is ${longVersion}; ` +
        "pin the same version in package.json",
    );
  }
  return {
    compilerPath: path.join(path.dirname(require.resolve("solc")), "soljson.js"),
    isSolcJs: true,
    version: solcVersion,
    longVersion,
  };
});

/** @type import('hardhat/config').HardhatUserConfig */
module.exports = {
  solidity: {
    version: compiler.version,
    settings: compiler.settings,
  },
  paths: {
    sources: "./solidity/contracts",
    tests: "./solidity/test",
    cache: "./cache",
    artifacts: "./artifacts",
  },
  networks: {
    hardhat: {
      hardfork: compiler.settings.evmVersion,
    },
  },
};
