// Test infrastructure: Hardhat's node (EDR) as the second, independent node the chain-facing
// tests run on (dul.chain.testing.HardhatChainNode writes the DUL_HARDHAT_* values). Set like
// the embedded anvil: no dev accounts, zero base fee, the same block gas limit and EVM target,
// interval mining.
const compiler = require("../../solidity/compiler.json");

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return Number(value);
};

module.exports = {
  paths: { cache: process.env.DUL_HARDHAT_CACHE || "./cache" },
  networks: {
    hardhat: {
      chainId: env("DUL_HARDHAT_CHAIN_ID"),
      hardfork: compiler.settings.evmVersion,
      accounts: [],
      blockGasLimit: env("DUL_HARDHAT_GAS_LIMIT"),
      initialBaseFeePerGas: 0,
      mining: { auto: false, interval: env("DUL_HARDHAT_BLOCK_MS") },
      // Sub-second blocks would otherwise each take a second of their own, running the
      // chain's clock ahead of the wall clock (anvil gives such blocks the same timestamp).
      allowBlocksWithSameTimestamp: true,
      loggingEnabled: false,
    },
  },
};
