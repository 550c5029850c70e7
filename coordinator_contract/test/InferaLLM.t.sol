// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Test} from "../testing/Test.sol";
import {InferaLLM} from "../src/consumer/InferaLLM.sol";

/// @notice External entry points to the library, so tests can expect its reverts (a revert must come from a call).
contract InferaLLMHarness {
    function text(string memory system, string memory prompt, uint32 maxNewTokens)
        external
        pure
        returns (bytes memory)
    {
        return InferaLLM.text(system, prompt, maxNewTokens);
    }

    function chat(string memory system, string[] memory messages, uint32 maxNewTokens)
        external
        pure
        returns (bytes memory)
    {
        return InferaLLM.chat(system, messages, maxNewTokens);
    }

    function choice(string memory system, string memory prompt, string[] memory allowed)
        external
        pure
        returns (bytes memory)
    {
        return InferaLLM.choice(system, prompt, allowed);
    }

    function integer(string memory system, string memory prompt, int256 min, int256 max)
        external
        pure
        returns (bytes memory)
    {
        return InferaLLM.integer(system, prompt, min, max);
    }

    function json(string memory system, string memory prompt, string memory schema, uint32 maxNewTokens)
        external
        pure
        returns (bytes memory)
    {
        return InferaLLM.json(system, prompt, schema, maxNewTokens);
    }

    function decode(bytes memory output) external pure returns (string memory, int256) {
        return InferaLLM.decode(output);
    }
}

/// @notice The wire input, decoded back into its eight fields.
struct Wire {
    string system;
    string[] messages;
    uint8 answer;
    string[] allowed;
    int256 min;
    int256 max;
    string schema;
    uint32 maxNewTokens;
}

abstract contract InferaLLMTest is Test {
    InferaLLMHarness internal llm;

    function setUp() public {
        llm = new InferaLLMHarness();
    }

    /// @dev Decodes with the fixed wire ABI; a builder that encoded anything else makes this revert.
    function _wire(bytes memory input) internal pure returns (Wire memory w) {
        (w.system, w.messages, w.answer, w.allowed, w.min, w.max, w.schema, w.maxNewTokens) =
            abi.decode(input, (string, string[], uint8, string[], int256, int256, string, uint32));
    }

    function _assertStrings(string[] memory a, string[] memory b, string memory message) internal pure {
        assertEq(a.length, b.length, string.concat(message, " length"));
        for (uint256 i; i < a.length; ++i) {
            assertEq(a[i], b[i], message);
        }
    }

    function _list(string memory a) internal pure returns (string[] memory l) {
        l = new string[](1);
        l[0] = a;
    }

    function _list(string memory a, string memory b) internal pure returns (string[] memory l) {
        l = new string[](2);
        l[0] = a;
        l[1] = b;
    }

    function _list(string memory a, string memory b, string memory c)
        internal
        pure
        returns (string[] memory l)
    {
        l = new string[](3);
        l[0] = a;
        l[1] = b;
        l[2] = c;
    }

    /// @dev Makes fuzzed strings non-empty and pairwise distinct, as valid messages and allowed values are.
    function _distinct(string[] memory values) internal pure returns (string[] memory) {
        for (uint256 i; i < values.length; ++i) {
            values[i] = string.concat(vm.toString(i), ":", values[i]);
        }
        return values;
    }

    /// @dev Checks the fields `kind` does not use are empty or zero.
    function _assertUnused(Wire memory w) internal pure {
        if (w.answer != uint8(InferaLLM.Answer.Choice)) assertEq(w.allowed.length, 0, "allowed unused");
        if (w.answer != uint8(InferaLLM.Answer.Integer)) {
            assertEq(w.min, 0, "min unused");
            assertEq(w.max, 0, "max unused");
        }
        if (w.answer != uint8(InferaLLM.Answer.Json)) assertEq(w.schema, "", "schema unused");
        if (w.answer == uint8(InferaLLM.Answer.Choice) || w.answer == uint8(InferaLLM.Answer.Integer)) {
            assertEq(w.maxNewTokens, 0, "maxNewTokens unused");
        }
    }
}

contract InferaLLMModelTest is InferaLLMTest {
    function testModelIdIsTheHashOfItsName() public pure {
        assertEq(InferaLLM.MODEL_NAME, "llm/smollm2-135m-instruct@1", "name");
        assertEq(InferaLLM.MODEL_ID, keccak256(bytes(InferaLLM.MODEL_NAME)), "id");
    }

    function testAnswerKindsAreTheWireNumbers() public pure {
        assertEq(uint256(InferaLLM.Answer.Text), 0, "text");
        assertEq(uint256(InferaLLM.Answer.Choice), 1, "choice");
        assertEq(uint256(InferaLLM.Answer.Integer), 2, "integer");
        assertEq(uint256(InferaLLM.Answer.Json), 3, "json");
    }
}

contract InferaLLMTextTest is InferaLLMTest {
    function testCanBuildText() public view {
        Wire memory w = _wire(llm.text("Be brief.", "Name a colour.", 16));
        assertEq(w.system, "Be brief.", "system");
        _assertStrings(w.messages, _list("Name a colour."), "messages");
        assertEq(w.answer, 0, "kind");
        assertEq(w.maxNewTokens, 16, "tokens");
        _assertUnused(w);
    }

    function testFuzzCanBuildText(string memory system, string memory prompt, uint32 maxNewTokens)
        public
        view
    {
        prompt = string.concat("p", prompt);
        maxNewTokens = uint32(bound(maxNewTokens, 1, type(uint32).max));
        bytes memory input = llm.text(system, prompt, maxNewTokens);
        assertEq(input, llm.chat(system, _list(prompt), maxNewTokens), "text is a one-message chat");
        Wire memory w = _wire(input);
        assertEq(w.system, system, "system");
        _assertStrings(w.messages, _list(prompt), "messages");
        assertEq(w.answer, uint8(InferaLLM.Answer.Text), "kind");
        assertEq(w.maxNewTokens, maxNewTokens, "tokens");
        _assertUnused(w);
    }

    function testCanBuildAChat() public view {
        string[] memory turns = _list("Hi, I am Ada.", "Hello Ada!", "What is my name?");
        Wire memory w = _wire(llm.chat("", turns, 8));
        assertEq(w.system, "", "no system prompt");
        _assertStrings(w.messages, turns, "messages");
        assertEq(w.answer, 0, "kind");
        assertEq(w.maxNewTokens, 8, "tokens");
        _assertUnused(w);
    }

    function testFuzzCanBuildAChat(string memory system, string[] memory turns, uint32 maxNewTokens)
        public
        view
    {
        if (turns.length % 2 == 0) turns = _list(string.concat("u", system));
        turns = _distinct(turns);
        maxNewTokens = uint32(bound(maxNewTokens, 1, type(uint32).max));
        Wire memory w = _wire(llm.chat(system, turns, maxNewTokens));
        assertEq(w.system, system, "system");
        _assertStrings(w.messages, turns, "messages");
        assertEq(w.answer, uint8(InferaLLM.Answer.Text), "kind");
        assertEq(w.maxNewTokens, maxNewTokens, "tokens");
        _assertUnused(w);
    }

    function testCannotChatWithAnEvenNumberOfMessages() public {
        vm.expectRevert(abi.encodeWithSelector(InferaLLM.EvenMessageCount.selector, 2));
        llm.chat("", _list("Hi", "Hello"), 8);
        vm.expectRevert(abi.encodeWithSelector(InferaLLM.EvenMessageCount.selector, 0));
        llm.chat("", new string[](0), 8);
    }

    function testFuzzCannotChatWithAnEvenNumberOfMessages(uint256 pairs) public {
        pairs = bound(pairs, 0, 8);
        string[] memory turns = _distinct(new string[](2 * pairs));
        vm.expectRevert(abi.encodeWithSelector(InferaLLM.EvenMessageCount.selector, 2 * pairs));
        llm.chat("", turns, 8);
    }

    function testCannotSendAnEmptyMessage() public {
        vm.expectRevert(abi.encodeWithSelector(InferaLLM.EmptyMessage.selector, 0));
        llm.text("system", "", 8);
        vm.expectRevert(abi.encodeWithSelector(InferaLLM.EmptyMessage.selector, 1));
        llm.chat("", _list("Hi", "", "Hello?"), 8);
    }

    function testFuzzCannotSendAnEmptyMessage(uint256 turns, uint256 empty) public {
        turns = 2 * bound(turns, 0, 8) + 1;
        empty = bound(empty, 0, turns - 1);
        string[] memory messages = _distinct(new string[](turns));
        messages[empty] = "";
        vm.expectRevert(abi.encodeWithSelector(InferaLLM.EmptyMessage.selector, empty));
        llm.chat("", messages, 8);
    }

    function testCannotAskForZeroTokens() public {
        vm.expectRevert(InferaLLM.ZeroMaxNewTokens.selector);
        llm.text("", "Hi", 0);
        vm.expectRevert(InferaLLM.ZeroMaxNewTokens.selector);
        llm.chat("", _list("Hi"), 0);
        vm.expectRevert(InferaLLM.ZeroMaxNewTokens.selector);
        llm.json("", "Hi", "{}", 0);
    }

    function testFuzzCannotAskForZeroTokens(string memory system, string memory prompt) public {
        vm.expectRevert(InferaLLM.ZeroMaxNewTokens.selector);
        llm.text(system, string.concat("p", prompt), 0);
    }
}

contract InferaLLMChoiceTest is InferaLLMTest {
    function testCanBuildAChoice() public view {
        Wire memory w = _wire(llm.choice("Moderate.", "Is this spam?", _list("yes", "no")));
        assertEq(w.system, "Moderate.", "system");
        _assertStrings(w.messages, _list("Is this spam?"), "messages");
        assertEq(w.answer, 1, "kind");
        _assertStrings(w.allowed, _list("yes", "no"), "allowed");
        _assertUnused(w);
    }

    function testFuzzCanBuildAChoice(string memory system, string memory prompt, string[] memory allowed)
        public
        view
    {
        if (allowed.length == 0) allowed = new string[](1);
        allowed = _distinct(allowed);
        prompt = string.concat("p", prompt);
        Wire memory w = _wire(llm.choice(system, prompt, allowed));
        assertEq(w.system, system, "system");
        _assertStrings(w.messages, _list(prompt), "messages");
        assertEq(w.answer, uint8(InferaLLM.Answer.Choice), "kind");
        _assertStrings(w.allowed, allowed, "allowed");
        _assertUnused(w);
    }

    function testCannotChooseFromNothing() public {
        vm.expectRevert(InferaLLM.NoAllowedValues.selector);
        llm.choice("", "Pick one", new string[](0));
    }

    function testFuzzCannotChooseFromNothing(string memory system, string memory prompt) public {
        vm.expectRevert(InferaLLM.NoAllowedValues.selector);
        llm.choice(system, string.concat("p", prompt), new string[](0));
    }

    function testCannotAllowAnEmptyValue() public {
        vm.expectRevert(abi.encodeWithSelector(InferaLLM.EmptyAllowedValue.selector, 1));
        llm.choice("", "Pick one", _list("a", "", "b"));
    }

    function testFuzzCannotAllowAnEmptyValue(uint256 count, uint256 empty) public {
        count = bound(count, 1, 16);
        empty = bound(empty, 0, count - 1);
        string[] memory allowed = _distinct(new string[](count));
        allowed[empty] = "";
        vm.expectRevert(abi.encodeWithSelector(InferaLLM.EmptyAllowedValue.selector, empty));
        llm.choice("", "Pick one", allowed);
    }

    function testCannotAllowAValueTwice() public {
        vm.expectRevert(abi.encodeWithSelector(InferaLLM.DuplicateAllowedValue.selector, 2));
        llm.choice("", "Pick one", _list("yes", "no", "yes"));
    }

    function testFuzzCannotAllowAValueTwice(uint256 count, uint256 first, uint256 second) public {
        count = bound(count, 2, 16);
        second = bound(second, 1, count - 1);
        first = bound(first, 0, second - 1);
        string[] memory allowed = _distinct(new string[](count));
        allowed[second] = allowed[first];
        vm.expectRevert(abi.encodeWithSelector(InferaLLM.DuplicateAllowedValue.selector, second));
        llm.choice("", "Pick one", allowed);
    }

    function testCannotChooseWithAnEmptyPrompt() public {
        vm.expectRevert(abi.encodeWithSelector(InferaLLM.EmptyMessage.selector, 0));
        llm.choice("", "", _list("yes", "no"));
    }

    function testFuzzCannotChooseWithAnEmptyPrompt(string memory system) public {
        vm.expectRevert(abi.encodeWithSelector(InferaLLM.EmptyMessage.selector, 0));
        llm.choice(system, "", _list("yes", "no"));
    }
}

contract InferaLLMIntegerTest is InferaLLMTest {
    function testCanBuildAnInteger() public view {
        Wire memory w = _wire(llm.integer("Score it.", "Rate this text", 1, 10));
        assertEq(w.system, "Score it.", "system");
        _assertStrings(w.messages, _list("Rate this text"), "messages");
        assertEq(w.answer, 2, "kind");
        assertEq(w.min, 1, "min");
        assertEq(w.max, 10, "max");
        _assertUnused(w);
    }

    function testFuzzCanBuildAnInteger(string memory system, string memory prompt, int256 a, int256 b)
        public
        view
    {
        (int256 min, int256 max) = a <= b ? (a, b) : (b, a);
        prompt = string.concat("p", prompt);
        Wire memory w = _wire(llm.integer(system, prompt, min, max));
        assertEq(w.system, system, "system");
        _assertStrings(w.messages, _list(prompt), "messages");
        assertEq(w.answer, uint8(InferaLLM.Answer.Integer), "kind");
        assertEq(w.min, min, "min");
        assertEq(w.max, max, "max");
        _assertUnused(w);
    }

    function testCannotAskForAnIntegerInAnEmptyRange() public {
        vm.expectRevert(abi.encodeWithSelector(InferaLLM.InvalidRange.selector, int256(10), int256(1)));
        llm.integer("", "Rate this text", 10, 1);
    }

    function testFuzzCannotAskForAnIntegerInAnEmptyRange(int256 a, int256 b) public {
        if (a == b) b = a == type(int256).max ? a - 1 : a + 1;
        (int256 min, int256 max) = a > b ? (a, b) : (b, a);
        vm.expectRevert(abi.encodeWithSelector(InferaLLM.InvalidRange.selector, min, max));
        llm.integer("", "Rate this text", min, max);
    }

    function testCannotAskForAnIntegerWithAnEmptyPrompt() public {
        vm.expectRevert(abi.encodeWithSelector(InferaLLM.EmptyMessage.selector, 0));
        llm.integer("", "", 1, 10);
    }

    function testFuzzCannotAskForAnIntegerWithAnEmptyPrompt(int256 min) public {
        vm.expectRevert(abi.encodeWithSelector(InferaLLM.EmptyMessage.selector, 0));
        llm.integer("", "", min, min);
    }
}

contract InferaLLMJsonTest is InferaLLMTest {
    string internal constant SCHEMA =
        '{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}';

    function testCanBuildJson() public view {
        Wire memory w = _wire(llm.json("Extract.", "I live in Lyon.", SCHEMA, 32));
        assertEq(w.system, "Extract.", "system");
        _assertStrings(w.messages, _list("I live in Lyon."), "messages");
        assertEq(w.answer, 3, "kind");
        assertEq(w.schema, SCHEMA, "schema");
        assertEq(w.maxNewTokens, 32, "tokens");
        _assertUnused(w);
    }

    function testFuzzCanBuildJson(
        string memory system,
        string memory prompt,
        string memory schema,
        uint32 tokens
    ) public view {
        prompt = string.concat("p", prompt);
        schema = string.concat("{", schema);
        tokens = uint32(bound(tokens, 1, type(uint32).max));
        Wire memory w = _wire(llm.json(system, prompt, schema, tokens));
        assertEq(w.system, system, "system");
        _assertStrings(w.messages, _list(prompt), "messages");
        assertEq(w.answer, uint8(InferaLLM.Answer.Json), "kind");
        assertEq(w.schema, schema, "schema");
        assertEq(w.maxNewTokens, tokens, "tokens");
        _assertUnused(w);
    }

    function testCannotAskForJsonWithoutASchema() public {
        vm.expectRevert(InferaLLM.EmptySchema.selector);
        llm.json("", "I live in Lyon.", "", 32);
    }

    function testFuzzCannotAskForJsonWithoutASchema(string memory prompt, uint32 tokens) public {
        vm.expectRevert(InferaLLM.EmptySchema.selector);
        llm.json("", string.concat("p", prompt), "", tokens);
    }
}

contract InferaLLMDecodeTest is InferaLLMTest {
    function testCanDecodeAChoice() public view {
        (string memory text, int256 value) = llm.decode(abi.encode("no", int256(1)));
        assertEq(text, "no", "text");
        assertEq(value, 1, "index");
    }

    function testCanDecodeANegativeInteger() public view {
        (string memory text, int256 value) = llm.decode(abi.encode("-7", int256(-7)));
        assertEq(text, "-7", "text");
        assertEq(value, -7, "value");
    }

    function testFuzzCanDecode(string memory text, int256 value) public view {
        (string memory gotText, int256 gotValue) = llm.decode(abi.encode(text, value));
        assertEq(gotText, text, "text");
        assertEq(gotValue, value, "value");
    }

    function testCannotDecodeMalformedOutput() public view {
        try llm.decode(hex"deadbeef") {
            fail("a four-byte output must not decode");
        } catch (bytes memory reason) {
            assertEq(reason.length, 0, "abi.decode reverts without data");
        }
    }

    function testFuzzCannotDecodeShortOutput(bytes memory output) public view {
        if (output.length >= 96) output = "";
        try llm.decode(output) {
            fail("shorter than an empty string and a word must not decode");
        } catch (bytes memory reason) {
            assertEq(reason.length, 0, "abi.decode reverts without data");
        }
    }
}
