// A stock ethers v6 wallet (dul.chain.testing.run_ethers_wallet) sends one transaction, letting
// ethers choose every fee field itself. Env: RPC_URL, KEY, TO, optional RPC_TOKEN (sent as
// `Authorization: Bearer`). Prints one JSON line: the fee data ethers read and the receipt.
const { ethers } = require("ethers");

async function main() {
  const request = new ethers.FetchRequest(process.env.RPC_URL);
  if (process.env.RPC_TOKEN) {
    request.setHeader("Authorization", `Bearer ${process.env.RPC_TOKEN}`);
  }
  const provider = new ethers.JsonRpcProvider(request, undefined, { pollingInterval: 100 });
  const wallet = new ethers.Wallet(process.env.KEY, provider);
  const fees = await provider.getFeeData();
  const tx = await wallet.sendTransaction({ to: process.env.TO, value: 0 });
  const receipt = await tx.wait(1, 30_000);
  console.log(
    JSON.stringify({
      fees: {
        gasPrice: String(fees.gasPrice),
        maxFeePerGas: String(fees.maxFeePerGas),
        maxPriorityFeePerGas: String(fees.maxPriorityFeePerGas),
      },
      type: tx.type,
      from: receipt.from,
      status: receipt.status,
      hash: receipt.hash,
    }),
  );
  provider.destroy();
}

main().catch((error) => {
  console.error(error && error.shortMessage ? error.shortMessage : error);
  process.exit(1);
});
