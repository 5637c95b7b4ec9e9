// The smallest Lodestone script: print() writes to the response body.
print('Hello from JavaScript');
