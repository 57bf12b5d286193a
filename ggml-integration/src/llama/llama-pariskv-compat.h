#pragma once
// What differs between the llama.cpp trees this integration builds on (docs/INTEGRATION.md).
